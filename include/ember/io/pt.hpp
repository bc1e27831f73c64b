// load_pt / parse_pt: torch.save(model.state_dict()) checkpoints (PyTorch's zip format) as an
// ember::state_dict, without executing anything: zip -> restricted unpickle -> checked tensor
// views of one ember storage per pickled storage.
#pragma once

#include <ember/any_tensor.hpp>
#include <ember/core/dtype.hpp>
#include <ember/core/error.hpp>
#include <ember/core/shape.hpp>
#include <ember/io/pickle.hpp>
#include <ember/io/zip.hpp>
#include <ember/state_dict.hpp>
#include <ember/tensor.hpp>

#include <bit>
#include <cerrno>
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace ember::io {

namespace detail {

/// The element type of a torch storage class: "torch.FloatStorage" -> f32; false if none.
inline bool pt_storage_dtype(std::string_view global, dtype& out) noexcept {
  static constexpr std::pair<std::string_view, dtype> table[] = {
      {"torch.FloatStorage", dtype::f32}, {"torch.DoubleStorage", dtype::f64},
      {"torch.HalfStorage", dtype::f16},  {"torch.BFloat16Storage", dtype::bf16},
      {"torch.LongStorage", dtype::i64},  {"torch.IntStorage", dtype::i32},
      {"torch.ShortStorage", dtype::i16}, {"torch.CharStorage", dtype::i8},
      {"torch.ByteStorage", dtype::u8},   {"torch.BoolStorage", dtype::boolean}};
  for (const auto& [name, t] : table)
    if (name == global) {
      out = t;
      return true;
    }
  return false;
}

/// A pickled storage, loaded once: a 1-D ember tensor over a copy of its zip entry's bytes.
struct pt_storage {
  dtype type;
  std::int64_t numel;
  any_tensor base;
};

/// Note [Torch checkpoint layout]: `<archive>/data.pkl` pickles the state_dict (an
/// OrderedDict, protocol 2). Each tensor is REDUCE(_rebuild_tensor_v2, (storage, offset, size,
/// stride, requires_grad, hooks)) where `storage` is BINPERSID of ('storage', torch.XStorage,
/// key, location, numel) and the elements are the raw little-endian entry `<archive>/data/<key>`.
/// Tensors sharing a storage (a view and its base, a tied weight) share one key; here each key
/// becomes one ember storage and every tensor a strided view of it, as torch.load gives. Each
/// reference is checked before use: kinds, counts, non-negative sizes and strides, the storage
/// entry holding numel elements, the view's extent inside the storage, and bool bytes in {0,1}.
class pt_loader {
 public:
  pt_loader(const zip_reader& zip, std::string archive, const pickle_graph& g, std::string source)
      : zip_(zip), archive_(std::move(archive)), g_(g), source_(std::move(source)) {}

  state_dict load() {
    const pickle_object& root = g_[g_.root];
    if (root.kind != pickle_kind::dict)
      ember::detail::fail(errc::not_implemented, source_, ": the checkpoint holds a ",
                          to_string(root.kind),
                          ", not a state_dict (a dict of tensors); load_pt reads "
                          "torch.save(model.state_dict()) files");
    on_path_.assign(g_.objects.size(), false);
    // Note [Walk budget]: shared containers make a DAG whose paths can be exponential in its
    // size; the walk's visits and the bytes of the names it builds are capped in proportion
    // to the object count, so a small pickle cannot produce a huge state_dict.
    budget_ = 4 * g_.objects.size() + 1024;
    name_budget_ = 256 * g_.objects.size() + (std::size_t{1} << 20);
    state_dict out;
    flatten(g_.root, "", 0, out);
    return out;
  }

 private:
  template <class... Parts>
  [[noreturn]] void fail(const Parts&... parts) const {
    ember::detail::fail(errc::io, source_, ": ", parts...);
  }
  const pickle_object& at(std::uint32_t i) const { return g_[i]; }
  const pickle_object& expect(std::uint32_t i, pickle_kind k, const std::string& name,
                              const char* what) const {
    const pickle_object& o = g_[i];
    if (o.kind != k)
      fail("'", name, "': ", what, " is a ", to_string(o.kind), ", expected a ", to_string(k));
    return o;
  }

  /// Walks dicts (dotted keys), lists and tuples (index keys) into `out`: tensors as entries,
  /// None/bool/int/float/str as metadata text.
  void flatten(std::uint32_t r, const std::string& name, int depth, state_dict& out) {
    if (budget_-- == 0 || name.size() > name_budget_)
      fail("the object graph is too large to walk (shared containers)");
    name_budget_ -= name.size();
    const pickle_object& o = at(r);
    switch (o.kind) {
      case pickle_kind::call: out.insert(name, tensor_of(r, name, 0)); return;
      case pickle_kind::none: out.metadata()[name] = "None"; return;
      case pickle_kind::boolean: out.metadata()[name] = o.boolean ? "True" : "False"; return;
      case pickle_kind::integer: out.metadata()[name] = std::to_string(o.integer); return;
      case pickle_kind::floating: out.metadata()[name] = float_text(o.floating); return;
      case pickle_kind::string: out.metadata()[name] = o.text; return;
      case pickle_kind::dict:
      case pickle_kind::list:
      case pickle_kind::tuple: break;
      default: fail("'", name, "' holds a ", to_string(o.kind), ", not a tensor");
    }
    if (depth >= 32) fail("'", name, "': containers nested deeper than 32 levels");
    if (on_path_[r]) fail("'", name, "': a container that contains itself");
    on_path_[r] = true;
    const std::string prefix = name.empty() ? name : name + ".";
    if (o.kind == pickle_kind::dict) {
      for (std::size_t i = 0; i + 1 < o.items.size(); i += 2)
        flatten(o.items[i + 1], prefix + key_text(o.items[i], name), depth + 1, out);
    } else {
      for (std::size_t i = 0; i < o.items.size(); ++i)
        flatten(o.items[i], prefix + std::to_string(i), depth + 1, out);
    }
    on_path_[r] = false;
  }
  std::string key_text(std::uint32_t k, const std::string& name) const {
    const pickle_object& o = at(k);
    if (o.kind == pickle_kind::string) return o.text;
    if (o.kind == pickle_kind::integer) return std::to_string(o.integer);
    fail("a key of '", name, "' is a ", to_string(o.kind), ", not a str or int");
  }
  /// As Python's repr: shortest round-trip digits, "1.0" rather than "1".
  static std::string float_text(double v) {
    char buf[64];
    const auto res = std::to_chars(buf, buf + sizeof buf, v);
    std::string s(buf, res.ptr);
    if (s.find_first_of(".ein") == std::string::npos) s += ".0";
    return s;
  }

  /// The tensor a REDUCE of a rebuild function describes (shared when referenced twice).
  any_tensor tensor_of(std::uint32_t call, const std::string& name, int depth) {
    if (auto it = tensors_.find(call); it != tensors_.end()) return it->second;
    const pickle_object& c = expect(call, pickle_kind::call, name, "the tensor");
    any_tensor t = rebuild(at(c.items[0]).text, at(c.items[1]), name, depth);
    tensors_.emplace(call, t);
    return t;
  }
  any_tensor rebuild(std::string_view fn, const pickle_object& args, const std::string& name,
                     int depth) {
    if (depth > 4) fail("'", name, "': tensor rebuild calls nested too deeply");
    const auto& a = args.items;
    auto arity = [&](std::size_t lo, std::size_t hi) {
      if (a.size() < lo || a.size() > hi)
        fail("'", name, "': ", fn, " called with ", a.size(), " arguments");
    };
    if (fn == "torch._utils._rebuild_tensor_v2") {
      arity(6, 7);  // torch >= 2.0 appends a metadata dict when the tensor has some
      expect(a[4], pickle_kind::boolean, name, "requires_grad");
      check_dict_or_none(a[5], name, "backward_hooks");
      if (a.size() == 7 && at(a[6]).kind != pickle_kind::none &&
          !(at(a[6]).kind == pickle_kind::dict && at(a[6]).items.empty()))
        ember::detail::fail(errc::not_implemented, source_, ": '", name,
                            "': tensor metadata (neg/conj bits) is not supported");
      return view_of(a[0], a[1], a[2], a[3], name);
    }
    if (fn == "torch._utils._rebuild_tensor") {
      arity(4, 4);
      return view_of(a[0], a[1], a[2], a[3], name);
    }
    if (fn == "torch._utils._rebuild_parameter" ||
        fn == "torch._utils._rebuild_parameter_with_state") {
      const std::size_t n = fn == "torch._utils._rebuild_parameter" ? 3 : 4;
      arity(n, n);  // (data, requires_grad, hooks[, python attributes])
      expect(a[1], pickle_kind::boolean, name, "requires_grad");
      return tensor_of(a[0], name, depth + 1);
    }
    if (fn == "torch._tensor._rebuild_from_type_v2") {  // (func, type, args, python attributes)
      arity(4, 4);
      const std::string& type = expect(a[1], pickle_kind::global, name, "the tensor type").text;
      if (type != "torch._tensor.Tensor" && type != "torch.Tensor" &&
          type != "torch.nn.parameter.Parameter")
        fail("'", name, "': tensor type '", type, "' is not supported");
      const std::string& inner =
          expect(a[0], pickle_kind::global, name, "the rebuild function").text;
      return rebuild(inner, expect(a[2], pickle_kind::tuple, name, "the arguments"), name,
                     depth + 1);
    }
    fail("'", name, "': a call of '", fn, "' does not make a tensor");
  }
  void check_dict_or_none(std::uint32_t i, const std::string& name, const char* what) const {
    const pickle_kind k = at(i).kind;
    if (k != pickle_kind::dict && k != pickle_kind::none)
      fail("'", name, "': ", what, " is a ", to_string(k), ", expected a dict");
  }

  std::vector<std::int64_t> int_tuple(std::uint32_t i, const std::string& name,
                                      const char* what) const {
    const pickle_object& t = expect(i, pickle_kind::tuple, name, what);
    if (t.items.size() > 64) fail("'", name, "': ", what, " has ", t.items.size(), " dimensions");
    std::vector<std::int64_t> v;
    for (auto e : t.items) {
      const pickle_object& x = expect(e, pickle_kind::integer, name, what);
      if (x.integer < 0) fail("'", name, "': negative value ", x.integer, " in the ", what);
      v.push_back(x.integer);
    }
    return v;
  }

  /// _rebuild_tensor_v2's view: checked against the storage, then as_strided over it.
  any_tensor view_of(std::uint32_t storage, std::uint32_t offset_ref, std::uint32_t size_ref,
                     std::uint32_t stride_ref, const std::string& name) {
    const pt_storage& s = storage_of(storage, name);
    const std::int64_t offset =
        expect(offset_ref, pickle_kind::integer, name, "the storage offset").integer;
    if (offset < 0) fail("'", name, "': negative storage offset ", offset);
    const shape sizes(int_tuple(size_ref, name, "size"));
    const shape strides(int_tuple(stride_ref, name, "stride"));
    if (sizes.size() != strides.size())
      fail("'", name, "': size ", sizes, " and stride ", strides, " differ in rank");
    std::int64_t numel = 1, last = offset;  // `last`: the highest element offset touched
    bool overflow = false;
    for (std::size_t d = 0; d < sizes.size(); ++d) {
      overflow |= __builtin_mul_overflow(numel, sizes[d], &numel);
      std::int64_t span = 0;
      if (sizes[d] > 0) overflow |= __builtin_mul_overflow(sizes[d] - 1, strides[d], &span);
      overflow |= __builtin_add_overflow(last, span, &last);
    }
    if (overflow) fail("'", name, "': size ", sizes, " and stride ", strides, " overflow");
    if (numel > 0 ? last >= s.numel : offset > s.numel)
      fail("'", name, "': size ", sizes, ", stride ", strides, " and offset ", offset,
           " reach element ", last, " of a storage of ", s.numel, " ", s.type, " elements");
    return s.base.visit(
        [&](const auto& base) { return any_tensor(base.as_strided(sizes, strides, offset)); });
  }

  /// The storage of a persistent id ('storage', torch.XStorage, key, location, numel), read
  /// from `<archive>/data/<key>` the first time (any location: loaded to the CPU).
  const pt_storage& storage_of(std::uint32_t persid, const std::string& name) {
    const pickle_object& p = expect(persid, pickle_kind::persistent_id, name, "the storage");
    const pickle_object& pid = expect(p.items[0], pickle_kind::tuple, name, "the persistent id");
    if (pid.items.size() != 5 || at(pid.items[0]).kind != pickle_kind::string ||
        at(pid.items[0]).text != "storage")
      fail("'", name, "': the persistent id is not ('storage', type, key, location, numel)");
    const std::string& type_name =
        expect(pid.items[1], pickle_kind::global, name, "the storage type").text;
    dtype type{};
    if (!pt_storage_dtype(type_name, type))
      fail("'", name, "': '", type_name, "' is not a storage type");
    const std::string& key =
        expect(pid.items[2], pickle_kind::string, name, "the storage key").text;
    expect(pid.items[3], pickle_kind::string, name, "the storage location");
    const std::int64_t numel =
        expect(pid.items[4], pickle_kind::integer, name, "the storage size").integer;
    if (numel < 0) fail("'", name, "': storage '", key, "' has negative size ", numel);
    if (auto it = storages_.find(key); it != storages_.end()) {
      if (it->second.type != type || it->second.numel != numel)
        fail("'", name, "': storage '", key, "' is referenced as ", numel, " ", type,
             " elements and elsewhere as ", it->second.numel, " ", it->second.type);
      return it->second;
    }
    const std::string entry = archive_ + "/data/" + key;
    const zip_entry* e = zip_.find(entry);
    if (e == nullptr) fail("'", name, "': storage entry '", entry, "' is missing");
    const std::span<const std::uint8_t> bytes = zip_.read(*e);
    const std::size_t item = item_size(type);
    if (static_cast<std::uint64_t>(numel) > bytes.size() / item)
      fail("'", name, "': storage '", key, "' of ", numel, " ", type, " elements needs ",
           static_cast<std::uint64_t>(numel) * item, " bytes but '", entry, "' holds ",
           bytes.size());
    const std::size_t nbytes = static_cast<std::size_t>(numel) * item;
    if (type == dtype::boolean)
      for (std::size_t i = 0; i < nbytes; ++i)
        if (bytes[i] > 1)
          fail("'", name, "': bool storage '", key, "' holds the byte ", int(bytes[i]));
    any_tensor base = visit_dtype(type, [&](auto e0) {
      auto t = ember::detail::make_tensor<decltype(e0)>(shape{numel});
      if (nbytes != 0) std::memcpy(static_cast<void*>(t.data()), bytes.data(), nbytes);
      return any_tensor(t);
    });
    return storages_.emplace(key, pt_storage{type, numel, std::move(base)}).first->second;
  }

  const zip_reader& zip_;
  std::string archive_;
  const pickle_graph& g_;
  std::string source_;
  std::vector<bool> on_path_;
  std::size_t budget_ = 0;
  std::size_t name_budget_ = 0;
  std::unordered_map<std::string, pt_storage> storages_;
  std::unordered_map<std::uint32_t, any_tensor> tensors_;
};

/// parse_pt with `source` naming the bytes in messages.
inline state_dict parse_pt_named(const std::uint8_t* data, std::size_t size,
                                 const std::string& source) {
  if constexpr (std::endian::native != std::endian::little)
    ember::detail::fail(errc::not_implemented, source, ": load_pt needs a little-endian host");
  if (size >= 2 && data[0] == 0x80 && data[1] <= 5)
    ember::detail::fail(errc::not_implemented, source,
                        ": the legacy torch.save format (torch < 1.6 or "
                        "_use_new_zipfile_serialization=False) is not supported; re-save it "
                        "with a current torch");
  const zip_reader zip(data, size, source);
  if (zip.entries().empty()) ember::detail::fail(errc::io, source, ": empty zip archive");
  const std::string& first = zip.entries().front().name;
  const std::string archive = first.substr(0, first.find('/'));
  if (archive.size() == first.size())
    ember::detail::fail(errc::io, source, ": not a torch.save archive (its first entry '", first,
                        "' is not in a folder)");
  const zip_entry* pkl = zip.find(archive + "/data.pkl");
  if (pkl == nullptr) {
    if (zip.find(archive + "/constants.pkl") != nullptr)
      ember::detail::fail(errc::not_implemented, source,
                          ": a TorchScript archive (torch.jit.save); save its state_dict() with "
                          "torch.save instead");
    ember::detail::fail(errc::io, source, ": no '", archive, "/data.pkl' in the archive");
  }
  if (const zip_entry* order = zip.find(archive + "/byteorder")) {
    const auto b = zip.read(*order);
    const std::string_view text(reinterpret_cast<const char*>(b.data()), b.size());
    if (text != "little")
      ember::detail::fail(errc::io, source, ": byte order '", text.substr(0, 16),
                          "' (only little-endian checkpoints are supported)");
  }
  const auto pickle = zip.read(*pkl);
  const std::string pkl_source = source + ": " + pkl->name;
  const pickle_graph g = unpickle(pickle.data(), pickle.size(), {.source = pkl_source});
  return pt_loader(zip, archive, g, source).load();
}

}  // namespace detail

/// Reads a torch.save(model.state_dict()) checkpoint held in memory (PyTorch's zip format):
/// the keys in the pickle's order, nested dicts flattened with dotted keys, every tensor on the
/// CPU. Tensors that shared a storage in torch share one here (strided views), non-contiguous
/// ones keep their strides. Corrupt or hostile bytes are an ember::error (io); nothing in the
/// file is executed (only torch's tensor-rebuilding globals are accepted):
///   auto sd = em::io::parse_pt(bytes.data(), bytes.size());
inline state_dict parse_pt(const std::uint8_t* data, std::size_t size) {
  return detail::parse_pt_named(data, size, "parse_pt");
}

/// Reads a torch.save(model.state_dict()) file, as parse_pt (the whole file is read into
/// memory first; each storage is then copied once into ember memory):
///   em::state_dict sd = em::io::load_pt("net.pt");
///   em::tensor<float> w = sd.get<float>("0.weight");
/// Scalars in the pickle (e.g. an "epoch" beside the weights) go to sd.metadata() as text;
/// torch's per-module `_metadata` versions are dropped.
inline state_dict load_pt(const std::string& path) {
  const std::string source = "load_pt: '" + path + "'";
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!f) ember::detail::fail(errc::io, source, ": cannot open: ", std::strerror(errno));
  long size = -1;
  if (std::fseek(f.get(), 0, SEEK_END) == 0) size = std::ftell(f.get());
  if (size < 0 || std::fseek(f.get(), 0, SEEK_SET) != 0)
    ember::detail::fail(errc::io, source, ": cannot determine its size: ", std::strerror(errno));
  std::vector<std::uint8_t> bytes(static_cast<std::size_t>(size));
  if (std::fread(bytes.data(), 1, bytes.size(), f.get()) != bytes.size())
    ember::detail::fail(errc::io, source, ": read error: ",
                        std::ferror(f.get()) ? std::strerror(errno) : "file shrank while reading");
  return detail::parse_pt_named(bytes.data(), bytes.size(), source);
}

}  // namespace ember::io
