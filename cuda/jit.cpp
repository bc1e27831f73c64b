// Note [Kernel JIT]: the fused elementwise interpreter (Note [One dispatch]) pays a dispatch per
// instruction for every element group, which holds E1 on an H200 at 0.58 of the copy bandwidth
// where a compiled kernel reaches 0.87. So a program may also run as a kernel compiled for it:
//   source    jit_source writes the program as straight-line CUDA, one `const C tN = ...;` per
//             instruction, over the ops' math as text (op_math_text, Note [Op math as text]:
//             the interpreter's own definitions) and loads and stores of the leaves' dtypes;
//   values    nothing that changes between launches is in the source: pointers, sizes, strides
//             and every constant are the kernel's parameter (jit_params), so `x * lr` compiles
//             once for every learning rate;
//   compile   NVRTC, opened with dlopen the first time a kernel is wanted (ember needs no NVRTC
//             to link or to run: without it, programs are interpreted), for the GPU's own
//             architecture (cubin), or as PTX for the newest one NVRTC knows when the GPU is
//             newer than NVRTC;
//   cache     in memory by the program's structure (its ops, operand forms, dtypes, layout and
//             the GPU's architecture) and on disk by a hash of the source and the options,
//             the file holding the source to rule out a collision; files are written to a
//             temporary name and renamed, so concurrent processes never read half a kernel;
//   when      jit_mode (<ember/cuda.hpp>): by default programs of jit_min_numel elements or more,
//             where the kernel's speed is worth a compile (~0.1 s, once per machine with the disk
//             cache), and every program already compiled.
// A failed compile or load is recorded (jit_statistics) and the program is interpreted: the
// JIT is never the reason an expression fails.
#include "jit.hpp"

#include <ember/cuda.hpp>

#include <ember/core/error.hpp>

#include <cuda_runtime_api.h>
#include <dlfcn.h>
#include <nvrtc.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <unordered_map>
#include <vector>

namespace ember::cuda_backend {
namespace {

using dispatch::elementwise_program;
using dispatch::instr;
using dispatch::operand_form;
namespace opc = dispatch::opc;
namespace code = dispatch::code;

constexpr int block_threads = 256;
constexpr int lanes = 4;  // elements per thread and grid step in flat kernels, as the interpreter

/// The kernels' parameter: everything that may change between launches of one kernel. The
/// JIT source declares the same struct (jit_params_source); every member is 8 bytes wide, so
/// the two layouts agree without padding rules.
struct jit_params {
  void* out;
  const void* leaf[dispatch::max_leaves];
  std::int64_t numel;
  std::int64_t shape[dispatch::max_rank];
  std::int64_t out_stride[dispatch::max_rank];
  std::int64_t stride[dispatch::max_leaves][dispatch::max_rank];
  double value[dispatch::max_code];
};
static_assert(sizeof(jit_params) ==
              8 * (2 + dispatch::max_leaves + 2 * dispatch::max_rank +
                   dispatch::max_leaves * dispatch::max_rank + dispatch::max_code));

std::string jit_params_source() {
  std::ostringstream s;
  s << "struct params {\n  void* out;\n  const void* leaf[" << dispatch::max_leaves
    << "];\n  long long numel;\n  long long shape[" << dispatch::max_rank
    << "];\n  long long out_stride[" << dispatch::max_rank << "];\n  long long stride["
    << dispatch::max_leaves << "][" << dispatch::max_rank << "];\n  double value["
    << dispatch::max_code << "];\n};\n";
  return s.str();
}

/// The parts, streamed into one string.
template <class... T>
std::string cat(const T&... parts) {
  std::ostringstream s;
  (s << ... << parts);
  return s.str();
}

const char* type_name(std::uint8_t dt) {
  switch (dt) {
    case code::f32: return "float";
    case code::f64: return "double";
    case code::i32: return "int";
    case code::i64: return "long long";
    case code::u8: return "unsigned char";
    case code::boolean: return "bool";
    case code::i8: return "signed char";
    case code::i16: return "short";
    default:
      ember::detail::fail(errc::internal, "cuda jit: no type for dtype code ", int(dt));
  }
}

const char* compute_name(dispatch::compute c) {
  switch (c) {
    case dispatch::compute::f32: return "float";
    case dispatch::compute::f64: return "double";
    case dispatch::compute::i64: return "long long";
  }
  return "float";
}

/// The code every kernel starts with: what op_math_text needs (EMBER_HD, the std names it
/// uses, code::), that text, and the leaves' loads and stores.
const std::string& prelude() {
  static const std::string text = [] {
    std::ostringstream s;
    s << "#define EMBER_HD __device__ __forceinline__\n"
         "namespace std {\n"
         "typedef signed char int8_t; typedef unsigned char uint8_t; typedef short int16_t;\n"
         "typedef unsigned short uint16_t; typedef int int32_t; typedef unsigned int uint32_t;\n"
         "typedef long long int64_t; typedef unsigned long long uint64_t;\n"
         "template <class T> inline constexpr bool is_integral_v = false;\n";
    for (const char* t : {"bool", "signed char", "unsigned char", "short", "unsigned short", "int",
                          "unsigned int", "long", "unsigned long", "long long",
                          "unsigned long long"})
      s << "template <> inline constexpr bool is_integral_v<" << t << "> = true;\n";
    s << "}  // namespace std\n"
         "namespace ember_jit {\n"
         "namespace code {\n";
    const std::pair<const char*, std::uint8_t> codes[] = {
        {"f32", code::f32}, {"f64", code::f64},         {"i32", code::i32}, {"i64", code::i64},
        {"u8", code::u8},   {"boolean", code::boolean}, {"i8", code::i8},   {"i16", code::i16}};
    for (const auto& [name, v] : codes)
      s << "constexpr std::uint8_t " << name << " = " << int(v) << ";\n";
    s << "}  // namespace code\n"
      << dispatch::op_math_text << "\n"
      << jit_params_source()
      << "template <class T, class C> EMBER_HD C ld(const void* p, long long i) {\n"
         "  return static_cast<C>(static_cast<const T*>(p)[i]);\n}\n"
         "template <class C> EMBER_HD C ld_bool(const void* p, long long i) {\n"
         "  return static_cast<const bool*>(p)[i] ? C(1) : C(0);\n}\n"
         "template <class T, class C> EMBER_HD void st(void* p, long long i, C v) {\n"
         "  static_cast<T*>(p)[i] = static_cast<T>(v);\n}\n"
         "template <class C> EMBER_HD void st_bool(void* p, long long i, C v) {\n"
         "  static_cast<bool*>(p)[i] = v != C(0);\n}\n"
         "}  // namespace ember_jit\n";
    return s.str();
  }();
  return text;
}

std::string load_expr(std::uint8_t dt, const std::string& ptr, const std::string& at) {
  if (dt == code::boolean) return "ember_jit::ld_bool<C>(" + ptr + ", " + at + ")";
  return std::string("ember_jit::ld<") + type_name(dt) + ", C>(" + ptr + ", " + at + ")";
}

std::string store_stmt(std::uint8_t dt, const std::string& at, const std::string& v) {
  if (dt == code::boolean) return "ember_jit::st_bool<C>(p.out, " + at + ", " + v + ");";
  return std::string("ember_jit::st<") + type_name(dt) + ", C>(p.out, " + at + ", " + v + ");";
}

// Note [No contraction]: kernels are compiled with --fmad=false, as cuda/kernels.cu is: no
// multiply is fused with the add after it (FMA contraction, which NVVM and then ptxas would do
// across ops in straight-line code, e.g. `x * x + 1`). Every op rounds its result as the
// interpreter and the CPU do, so a program gives the same bits however it runs, and
// jit_mode's size threshold never changes a result. (The math functions keep their own
// explicit FMAs: libdevice's code does not depend on the flag.) Memory-bound kernels lose no
// speed by it.
/// The program's instructions as statements over lane j of the leaf arrays l0, l1, ...;
/// returns the name holding the result.
std::string emit_body(const elementwise_program& p, std::ostringstream& s, const char* indent) {
  std::vector<std::string> stack;
  auto pop = [&] {
    ember::detail::check(!stack.empty(), errc::internal, "cuda jit: the program's stack underflows");
    std::string v = std::move(stack.back());
    stack.pop_back();
    return v;
  };
  const auto leaf = [](int k) { return cat("l", k, "[j]"); };
  for (int pc = 0; pc < p.n_code; ++pc) {
    const instr& in = p.code[pc];
    const std::string t = cat("t", pc), value = cat("C(p.value[", pc, "])");
    std::string e;
    if (in.op == opc::leaf) {
      stack.push_back(leaf(in.leaf));
      continue;
    }
    if (in.op == opc::scalar) {
      stack.push_back(value);
      continue;
    }
    if (in.op == opc::cast) {
      e = cat("ember_jit::detail::cast_to(std::uint8_t(", int(in.dtype), "), ", pop(), ")");
    } else if (in.op == opc::where) {
      const std::string b = pop(), a = pop(), c = pop();
      e = "(" + c + " != C(0) ? " + a + " : " + b + ")";
    } else if (in.op == opc::clamp) {
      const std::string hi = pop(), lo = pop(), x = pop();
      s << indent << "const C x" << pc << " = " << x << ", lo" << pc << " = " << lo << ", hi" << pc
        << " = " << hi << ";\n";
      const std::string X = cat("x", pc), L = cat("lo", pc), H = cat("hi", pc);
      e = "(" + X + " < " + L + " ? " + L + " : (" + X + " > " + H + " ? " + H + " : " + X + "))";
    } else if (dispatch::is_binary(in.op)) {
      const std::string f = cat("ember_jit::detail::binary<", in.op, ", C>(");
      switch (in.form) {
        case operand_form::stack: {
          const std::string b = pop(), a = pop();
          e = f + a + ", " + b + ")";
          break;
        }
        case operand_form::rhs_scalar: e = f + pop() + ", " + value + ")"; break;
        case operand_form::rhs_leaf: e = f + pop() + ", " + leaf(in.leaf) + ")"; break;
        case operand_form::lhs_scalar: e = f + value + ", " + pop() + ")"; break;
      }
    } else {
      e = cat("ember_jit::detail::unary<", in.op, ", C>(", pop(), ")");
    }
    s << indent << "const C " << t << " = " << e << ";\n";
    stack.push_back(t);
  }
  ember::detail::check(stack.size() == 1, errc::internal, "cuda jit: the program leaves ",
                       stack.size(), " values");
  return stack.back();
}

/// The kernel's own part of the source (after the prelude).
std::string kernel_source(const elementwise_program& p) {
  std::ostringstream s;
  s << "extern \"C\" __global__ void __launch_bounds__(" << block_threads
    << ") ember_fused(const __grid_constant__ ember_jit::params p) {\n"
    << "  typedef " << compute_name(p.ctype) << " C;\n";
  if (p.flat) {
    // as the interpreter's flat kernel (Note [Wide interpretation], Note [Flat tail]): a block
    // takes lanes * blockDim elements, each lane's loads coalesced; the tail's missing lanes
    // read the last element and store nothing; every leaf is loaded before anything is stored
    s << "  const long long n = p.numel, step = blockDim.x;\n"
      << "  for (long long base = (long long)blockIdx.x * step * " << lanes
      << " + threadIdx.x; base < n; base += (long long)gridDim.x * step * " << lanes << ") {\n"
      << "    long long at[" << lanes << "];\n"
      << "#pragma unroll\n"
      << "    for (int j = 0; j < " << lanes
      << "; ++j) { const long long i = base + j * step; at[j] = i < n ? i : n - 1; }\n";
    for (int k = 0; k < p.n_leaves; ++k) s << "    C l" << k << "[" << lanes << "];\n";
    s << "#pragma unroll\n    for (int j = 0; j < " << lanes << "; ++j) {\n";
    for (int k = 0; k < p.n_leaves; ++k)
      s << "      l" << k << "[j] = "
        << load_expr(p.leaves[k].dtype, cat("p.leaf[", k, "]"), "at[j]") << ";\n";
    s << "    }\n#pragma unroll\n    for (int j = 0; j < " << lanes << "; ++j) {\n";
    const std::string r = emit_body(p, s, "      ");
    s << "      if (base + j * step < n) " << store_stmt(p.out_dtype, "at[j]", r) << "\n"
      << "    }\n  }\n}\n";
  } else {
    s << "  const long long n = p.numel, step = (long long)gridDim.x * blockDim.x;\n"
      << "  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += step) {\n"
      << "    long long rest = i, o_out = 0";
    for (int k = 0; k < p.n_leaves; ++k) s << ", o" << k << " = 0";
    s << ";\n";
    for (int d = p.rank - 1; d >= 0; --d) {
      s << "    { const long long e = p.shape[" << d << "], c = rest % e; rest /= e; o_out += c * p.out_stride["
        << d << "];";
      for (int k = 0; k < p.n_leaves; ++k)
        s << " o" << k << " += c * p.stride[" << k << "][" << d << "];";
      s << " }\n";
    }
    s << "    const int j = 0;\n";
    for (int k = 0; k < p.n_leaves; ++k)
      s << "    const C l" << k << "[1] = {"
        << load_expr(p.leaves[k].dtype, cat("p.leaf[", k, "]"), cat("o", k))
        << "};\n";
    const std::string r = emit_body(p, s, "    ");
    s << "    " << store_stmt(p.out_dtype, "o_out", r) << "\n  }\n}\n";
  }
  return s.str();
}

jit_params params_of(const elementwise_program& p) {
  jit_params a{};
  a.out = p.out;
  a.numel = p.numel;
  for (int d = 0; d < dispatch::max_rank; ++d) {
    a.shape[d] = p.shape[d];
    a.out_stride[d] = p.out_stride[d];
  }
  for (int k = 0; k < p.n_leaves; ++k) {
    a.leaf[k] = p.leaves[k].data;
    for (int d = 0; d < dispatch::max_rank; ++d) a.stride[k][d] = p.leaves[k].stride[d];
  }
  for (int pc = 0; pc < p.n_code; ++pc) a.value[pc] = p.code[pc].value;
  return a;
}

/// The memory cache's key: what the source depends on (the program's structure, not its
/// values), and the architecture.
std::string structure_key(const elementwise_program& p, int arch) {
  std::string k;
  k.reserve(16 + p.n_leaves + 5 * p.n_code);
  auto put = [&k](int v) { k.push_back(static_cast<char>(v & 0xff)); };
  put(arch);
  put(static_cast<int>(p.ctype));
  put(p.out_dtype);
  put(p.flat ? 1 : 0);
  put(p.flat ? 0 : p.rank);
  put(p.n_leaves);
  for (int l = 0; l < p.n_leaves; ++l) put(p.leaves[l].dtype);
  for (int pc = 0; pc < p.n_code; ++pc) {
    const instr& in = p.code[pc];
    put(in.op);
    put(in.op >> 8);
    put(static_cast<int>(in.form));
    put(in.op == opc::cast ? in.dtype : 0);
    put(in.op == opc::leaf || in.form == operand_form::rhs_leaf ? in.leaf : 0);
  }
  return k;
}

std::uint64_t fnv1a(const std::string& s, std::uint64_t h = 1469598103934665603ull) {
  for (const unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

// ---- NVRTC, opened at run time ----------------------------------------------------------------

struct nvrtc_api {
  bool tried = false;
  void* lib = nullptr;
  std::string path, error;
  int major = 0, minor = 0;
  std::vector<int> archs;  // the sm_ NVRTC can compile to
  nvrtcResult (*create)(nvrtcProgram*, const char*, const char*, int, const char* const*,
                        const char* const*) = nullptr;
  nvrtcResult (*compile)(nvrtcProgram, int, const char* const*) = nullptr;
  nvrtcResult (*log_size)(nvrtcProgram, std::size_t*) = nullptr;
  nvrtcResult (*log)(nvrtcProgram, char*) = nullptr;
  nvrtcResult (*cubin_size)(nvrtcProgram, std::size_t*) = nullptr;
  nvrtcResult (*cubin)(nvrtcProgram, char*) = nullptr;
  nvrtcResult (*ptx_size)(nvrtcProgram, std::size_t*) = nullptr;
  nvrtcResult (*ptx)(nvrtcProgram, char*) = nullptr;
  nvrtcResult (*destroy)(nvrtcProgram*) = nullptr;
  const char* (*error_string)(nvrtcResult) = nullptr;
};

template <class F>
bool bind(void* lib, const char* name, F& f) {
  f = reinterpret_cast<F>(dlsym(lib, name));
  return f != nullptr;
}

nvrtc_api& nvrtc_state() {
  static auto* api = new nvrtc_api;  // never destroyed (nor unloaded): kernels may outlive main
  return *api;
}

/// NVRTC: EMBER_NVRTC (a path) when set, else the soname of this build's CUDA major version,
/// the unversioned name, and the build's toolkit directory. Called under the JIT's lock.
nvrtc_api& nvrtc() {
  nvrtc_api& api = nvrtc_state();
  if (api.tried) return api;
  api.tried = true;
  std::vector<std::string> names;
  if (const char* e = std::getenv("EMBER_NVRTC"); e != nullptr && *e != '\0') names.emplace_back(e);
  const std::string major = std::to_string(CUDART_VERSION / 1000);
  names.push_back("libnvrtc.so." + major);
  names.emplace_back("libnvrtc.so");
#ifdef EMBER_CUDA_ROOT
  names.push_back(std::string(EMBER_CUDA_ROOT) + "/lib64/libnvrtc.so." + major);
#endif
  for (const std::string& n : names) {
    api.lib = dlopen(n.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (api.lib != nullptr) {
      api.path = n;
      break;
    }
  }
  if (api.lib == nullptr) {
    api.error = "NVRTC not found (tried";
    for (const std::string& n : names) api.error += " " + n;
    api.error += "; set EMBER_NVRTC to its path)";
    return api;
  }
  nvrtcResult (*version)(int*, int*) = nullptr;
  nvrtcResult (*n_archs)(int*) = nullptr;
  nvrtcResult (*get_archs)(int*) = nullptr;
  const bool ok = bind(api.lib, "nvrtcCreateProgram", api.create) &&
                  bind(api.lib, "nvrtcCompileProgram", api.compile) &&
                  bind(api.lib, "nvrtcGetProgramLogSize", api.log_size) &&
                  bind(api.lib, "nvrtcGetProgramLog", api.log) &&
                  bind(api.lib, "nvrtcGetCUBINSize", api.cubin_size) &&
                  bind(api.lib, "nvrtcGetCUBIN", api.cubin) &&
                  bind(api.lib, "nvrtcGetPTXSize", api.ptx_size) &&
                  bind(api.lib, "nvrtcGetPTX", api.ptx) &&
                  bind(api.lib, "nvrtcDestroyProgram", api.destroy) &&
                  bind(api.lib, "nvrtcGetErrorString", api.error_string) &&
                  bind(api.lib, "nvrtcVersion", version) &&
                  bind(api.lib, "nvrtcGetNumSupportedArchs", n_archs) &&
                  bind(api.lib, "nvrtcGetSupportedArchs", get_archs);
  int count = 0;
  if (!ok || version(&api.major, &api.minor) != NVRTC_SUCCESS || n_archs(&count) != NVRTC_SUCCESS) {
    api.error = api.path + " lacks the NVRTC functions ember uses";
    dlclose(api.lib);
    api.lib = nullptr;
    return api;
  }
  api.archs.resize(static_cast<std::size_t>(count));
  if (count > 0 && get_archs(api.archs.data()) != NVRTC_SUCCESS) api.archs.clear();
  return api;
}

/// A compiled image: a cubin for the GPU's architecture, or PTX (NUL-terminated) for the newest
/// architecture NVRTC knows when the GPU is newer. Throws ember::error with NVRTC's log.
std::string compile(const std::string& source, int arch, bool want_ptx, std::string& options_text) {
  nvrtc_api& api = nvrtc();
  ember::detail::check(api.lib != nullptr, errc::device, "cuda jit: ", api.error);
  int target = arch;
  bool ptx = want_ptx;
  if (!api.archs.empty() && std::find(api.archs.begin(), api.archs.end(), arch) == api.archs.end()) {
    ptx = true;  // a GPU newer than NVRTC: PTX of the newest architecture below it
    target = 0;
    for (int a : api.archs) if (a <= arch) target = std::max(target, a);
    ember::detail::check(target > 0, errc::device, "cuda jit: NVRTC ", api.major, ".", api.minor,
                         " cannot compile for compute capability ", arch / 10, ".", arch % 10);
  }
  const std::string arch_opt = std::string("--gpu-architecture=") + (ptx ? "compute_" : "sm_") +
                               std::to_string(target);
  const char* opts[] = {"--std=c++17", "--fmad=false", arch_opt.c_str()};  // Note [No contraction]
  options_text = cat(opts[0], " ", opts[1], " ", arch_opt, " nvrtc ", api.major, ".", api.minor);
  nvrtcProgram prog = nullptr;
  nvrtcResult r = api.create(&prog, source.c_str(), "ember_fused.cu", 0, nullptr, nullptr);
  ember::detail::check(r == NVRTC_SUCCESS, errc::device, "cuda jit: nvrtcCreateProgram failed: ",
                       api.error_string(r));
  struct closer {
    nvrtc_api& api;
    nvrtcProgram& prog;
    ~closer() { api.destroy(&prog); }
  } close{api, prog};
  r = api.compile(prog, 3, opts);
  if (r != NVRTC_SUCCESS) {
    std::size_t n = 0;
    std::string log;
    if (api.log_size(prog, &n) == NVRTC_SUCCESS && n > 1) {
      log.resize(n);
      if (api.log(prog, log.data()) != NVRTC_SUCCESS) log.clear();
      while (!log.empty() && (log.back() == '\0' || log.back() == '\n')) log.pop_back();
    }
    ember::detail::fail(errc::device, "cuda jit: nvrtcCompileProgram (", arch_opt, ") failed: ",
                        api.error_string(r), "\n", log);
  }
  std::size_t n = 0;
  std::string image;
  if (ptx) {
    r = api.ptx_size(prog, &n);
    if (r == NVRTC_SUCCESS) {
      image.resize(n);
      r = api.ptx(prog, image.data());
    }
  } else {
    r = api.cubin_size(prog, &n);
    if (r == NVRTC_SUCCESS) {
      image.resize(n);
      r = api.cubin(prog, image.data());
    }
  }
  ember::detail::check(r == NVRTC_SUCCESS && n > 0, errc::device, "cuda jit: NVRTC gave no ",
                       ptx ? "PTX" : "cubin", ": ", api.error_string(r));
  return image;
}

// ---- the disk cache ---------------------------------------------------------------------------

/// EMBER_CUDA_CACHE when set (empty: no disk cache), else $XDG_CACHE_HOME/ember/cuda-kernels,
/// else ~/.cache/ember/cuda-kernels.
std::string cache_dir() {
  std::string dir;
  if (const char* e = std::getenv("EMBER_CUDA_CACHE")) {
    dir = e;
  } else if (const char* x = std::getenv("XDG_CACHE_HOME"); x != nullptr && *x != '\0') {
    dir = std::string(x) + "/ember/cuda-kernels";
  } else if (const char* h = std::getenv("HOME"); h != nullptr && *h != '\0') {
    dir = std::string(h) + "/.cache/ember/cuda-kernels";
  }
  if (dir.empty()) return dir;
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  return ec ? std::string() : dir;
}

// A cache file: the line "ember-jit 1 <source bytes> <image bytes>\n", the source, the image.
constexpr const char* file_magic = "ember-jit 1";

std::string read_cached(const std::string& path, const std::string& source) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return {};
  std::string magic;
  std::size_t ns = 0, ni = 0;
  std::string tag;
  f >> magic >> tag >> ns >> ni;
  if (!f || magic + " " + tag != file_magic || f.get() != '\n' || ns != source.size() || ni == 0 ||
      ni > (std::size_t{256} << 20))
    return {};
  std::string s(ns, '\0'), image(ni, '\0');
  if (!f.read(s.data(), static_cast<std::streamsize>(ns)) || s != source ||
      !f.read(image.data(), static_cast<std::streamsize>(ni)) || f.peek() != EOF)
    return {};
  return image;
}

void write_cached(const std::string& path, const std::string& source, const std::string& image) {
  static std::atomic<unsigned> serial{0};
  const std::string tmp = path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(serial++);
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    f << file_magic << " " << source.size() << " " << image.size() << "\n";
    f.write(source.data(), static_cast<std::streamsize>(source.size()));
    f.write(image.data(), static_cast<std::streamsize>(image.size()));
    f.close();
    if (!f) {
      std::remove(tmp.c_str());
      return;  // a full or read-only disk: no cache entry, nothing else lost
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) std::remove(tmp.c_str());
}

// ---- the JIT's state ----------------------------------------------------------------------------

struct kernel_entry {
  cudaKernel_t kernel = nullptr;  // nullptr: the program failed to compile or load
};

struct jit_state {
  std::mutex mu;
  std::unordered_map<std::string, kernel_entry> kernels;
  std::atomic<int> mode{static_cast<int>(cuda::jit_mode::automatic)};
  std::atomic<std::int64_t> launches{0}, interpreted{0};
  std::int64_t compiled = 0, disk_hits = 0, failures = 0;
  std::string last_error;
  bool dir_known = false;
  std::string dir;
  int arch[8] = {};  // compute capability * 10 per GPU (0: not yet asked)
};

jit_state& jit() {
  static auto* s = [] {
    auto* st = new jit_state;  // never destroyed: launches may run during static destruction
    if (const char* e = std::getenv("EMBER_CUDA_JIT")) {
      const std::string v = e;
      if (v == "always" || v == "1") st->mode = static_cast<int>(cuda::jit_mode::always);
      else if (v == "never" || v == "0") st->mode = static_cast<int>(cuda::jit_mode::never);
    }
    return st;
  }();
  return *s;
}

int device_arch(jit_state& st, int index) {
  if (index < 0 || index >= 8) return 0;
  if (st.arch[index] == 0) {
    int major = 0, minor = 0;
    if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, index) != cudaSuccess ||
        cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, index) != cudaSuccess) {
      (void)cudaGetLastError();
      return 0;
    }
    st.arch[index] = major * 10 + minor;
  }
  return st.arch[index];
}

/// p's kernel for `arch`: from the disk cache, or compiled and saved there. Throws on failure.
cudaKernel_t build_kernel(jit_state& st, const elementwise_program& p, int arch) {
  const std::string source = prelude() + kernel_source(p);
  if (!st.dir_known) {
    st.dir = cache_dir();
    st.dir_known = true;
  }
  std::string image, options, path;
  if (!st.dir.empty()) {
    nvrtc_api& api = nvrtc();  // the version is part of the file's name
    char name[64];
    std::snprintf(name, sizeof name, "%016llx.bin",
                  static_cast<unsigned long long>(fnv1a(
                      std::to_string(arch) + " " + std::to_string(api.major) + "." +
                          std::to_string(api.minor) + "\n",
                      fnv1a(source))));
    path = st.dir + "/" + name;
    image = read_cached(path, source);
    if (!image.empty()) ++st.disk_hits;
  }
  if (image.empty()) {
    image = compile(source, arch, false, options);
    ++st.compiled;
    if (!path.empty()) write_cached(path, source, image);
  }
  cudaLibrary_t lib = nullptr;
  cudaError_t e = cudaLibraryLoadData(&lib, image.data(), nullptr, nullptr, 0, nullptr, nullptr, 0);
  cudaKernel_t k = nullptr;
  if (e == cudaSuccess) e = cudaLibraryGetKernel(&k, lib, "ember_fused");
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    ember::detail::fail(errc::device, "cuda jit: loading the compiled kernel failed: ",
                        cudaGetErrorName(e), " (", cudaGetErrorString(e), ")");
  }
  return k;  // the library stays loaded for the process's life, as the kernel cache
}

}  // namespace

bool jit_launch(const elementwise_program& p, int device_index, int sm_count, cudaStream_t s) {
  jit_state& st = jit();
  const auto mode = static_cast<cuda::jit_mode>(st.mode.load(std::memory_order_relaxed));
  if (mode == cuda::jit_mode::never || p.numel == 0) {
    ++st.interpreted;
    return false;
  }
  cudaKernel_t kernel = nullptr;
  {
    std::lock_guard lock(st.mu);
    const int arch = device_arch(st, device_index);
    if (arch == 0) {
      ++st.interpreted;
      return false;
    }
    const std::string key = structure_key(p, arch);
    auto it = st.kernels.find(key);
    if (it == st.kernels.end()) {
      if (mode == cuda::jit_mode::automatic && p.numel < cuda::jit_min_numel) {
        ++st.interpreted;
        return false;
      }
      kernel_entry entry;
      try {
        entry.kernel = build_kernel(st, p, arch);
      } catch (const ember::error& e) {
        ++st.failures;
        st.last_error = e.what();
      }
      it = st.kernels.emplace(key, entry).first;
    }
    kernel = it->second.kernel;
  }
  if (kernel == nullptr) {
    ++st.interpreted;
    return false;
  }
  jit_params a = params_of(p);
  void* args[] = {&a};
  const std::int64_t per_block = p.flat ? std::int64_t{block_threads} * lanes : block_threads;
  const std::int64_t blocks = std::clamp<std::int64_t>((p.numel + per_block - 1) / per_block, 1,
                                                       std::int64_t{sm_count} * 32);
  const cudaError_t e = cudaLaunchKernel(reinterpret_cast<const void*>(kernel),
                                         dim3(static_cast<unsigned>(blocks)), dim3(block_threads),
                                         args, 0, s);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    ember::detail::fail(errc::device, "CUDA call cudaLaunchKernel (compiled fused kernel) failed: ",
                        cudaGetErrorName(e), " (", cudaGetErrorString(e), ")");
  }
  ++st.launches;
  return true;
}

}  // namespace ember::cuda_backend

namespace ember::cuda {

void set_jit_mode(jit_mode m) { cuda_backend::jit().mode = static_cast<int>(m); }

jit_mode get_jit_mode() { return static_cast<jit_mode>(cuda_backend::jit().mode.load()); }

jit_stats jit_statistics() {
  auto& st = cuda_backend::jit();
  std::lock_guard lock(st.mu);
  jit_stats r;
  r.compiled = st.compiled;
  r.disk_hits = st.disk_hits;
  r.launches = st.launches;
  r.interpreted = st.interpreted;
  r.failures = st.failures;
  r.last_error = st.last_error;
  if (!st.dir_known) {
    st.dir = cuda_backend::cache_dir();
    st.dir_known = true;
  }
  r.cache_dir = st.dir;
  const auto& api = cuda_backend::nvrtc_state();  // not loaded just to be reported
  r.nvrtc = api.lib ? api.path : std::string();
  return r;
}

std::string jit_source(const dispatch::elementwise_program& p) {
  dispatch::elementwise_program q = p;
  dispatch::finish(q);
  return cuda_backend::prelude() + cuda_backend::kernel_source(q);
}

std::string jit_ptx(const dispatch::elementwise_program& p, int arch) {
  auto& st = cuda_backend::jit();
  std::lock_guard lock(st.mu);
  std::string options;
  std::string ptx = cuda_backend::compile(jit_source(p), arch, true, options);
  while (!ptx.empty() && ptx.back() == '\0') ptx.pop_back();
  return ptx;
}

}  // namespace ember::cuda
