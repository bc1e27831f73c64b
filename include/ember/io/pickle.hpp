// unpickle: a restricted reader of Python pickles (protocols 2-5, the opcodes torch.save uses).
// It executes nothing: globals must be on an allow-list, and REDUCE of one only records the call
// as data (pickle_kind::call) for the caller to interpret. Sizes and counts are capped.
#pragma once

#include <ember/core/error.hpp>

#include <bit>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace ember::io {

/// What a pickle_object is. `call` is REDUCE of an allowed global (never executed);
/// `persistent_id` is BINPERSID's argument, left for the caller to resolve.
enum class pickle_kind : std::uint8_t {
  none,
  boolean,
  integer,
  floating,
  string,
  bytes,
  tuple,
  list,
  dict,
  global,
  call,
  persistent_id
};

/// The Python-side name of a kind, for messages: to_string(pickle_kind::dict) == "dict".
constexpr std::string_view to_string(pickle_kind k) noexcept {
  constexpr std::string_view names[] = {"None",  "bool", "int",  "float",  "str",  "bytes",
                                        "tuple", "list", "dict", "global", "call", "persistent id"};
  return names[static_cast<std::size_t>(k)];
}

/// One unpickled value. Containers refer to other objects by index into pickle_graph::objects
/// (so shared and even cyclic references are plain indices, never owning pointers).
struct pickle_object {
  pickle_kind kind = pickle_kind::none;
  bool boolean = false;
  std::int64_t integer = 0;
  double floating = 0;
  std::string text;  ///< str and bytes contents; a global's "module.name"
  /// tuple/list: the elements; dict: keys and values interleaved (k0 v0 k1 v1 ..., in insertion
  /// order, a repeated key appearing twice); call: {callable global, args tuple};
  /// persistent_id: {pid}.
  std::vector<std::uint32_t> items;
};

/// The objects an unpickle produced; `root` is the value STOP returned.
struct pickle_graph {
  std::vector<pickle_object> objects;
  std::uint32_t root = 0;
  const pickle_object& operator[](std::uint32_t i) const { return objects.at(i); }
};

/// A global the unpickler may import; only `callable` ones may be applied with REDUCE.
struct pickle_global {
  std::string_view name;  ///< "module.qualname"
  bool callable;
};

/// The globals in torch.save(state_dict) files: tensor and parameter rebuilders, storage types
/// (arguments of persistent ids, never called) and collections.OrderedDict.
inline constexpr pickle_global torch_state_dict_globals[] = {
    {"collections.OrderedDict", true},
    {"torch._utils._rebuild_tensor_v2", true},
    {"torch._utils._rebuild_tensor", true},
    {"torch._utils._rebuild_parameter", true},
    {"torch._utils._rebuild_parameter_with_state", true},
    {"torch._tensor._rebuild_from_type_v2", true},
    {"torch._tensor.Tensor", false},
    {"torch.Tensor", false},
    {"torch.nn.parameter.Parameter", false},
    {"torch.FloatStorage", false},
    {"torch.DoubleStorage", false},
    {"torch.HalfStorage", false},
    {"torch.BFloat16Storage", false},
    {"torch.LongStorage", false},
    {"torch.IntStorage", false},
    {"torch.ShortStorage", false},
    {"torch.CharStorage", false},
    {"torch.ByteStorage", false},
    {"torch.BoolStorage", false},
};

/// What unpickle accepts: the allow-list and the caps that bound its memory and time.
struct unpickle_options {
  std::span<const pickle_global> allowed = torch_state_dict_globals;
  std::size_t max_objects = std::size_t{1} << 23;
  std::size_t max_stack = std::size_t{1} << 20;  ///< values on the stack
  std::size_t max_marks = std::size_t{1} << 12;  ///< nested MARKs
  std::size_t max_memo = std::size_t{1} << 22;
  std::size_t max_string = std::size_t{1} << 28;     ///< bytes in one str/bytes
  std::size_t max_container = std::size_t{1} << 24;  ///< elements of one tuple/list/dict
  std::string_view source = {};                      ///< names the input in error messages
};

namespace detail {

/// Names of the opcodes unpickle rejects, for its messages (0 when not a pickle opcode).
inline const char* pickle_opcode_name(std::uint8_t op) noexcept {
  switch (op) {
    case 'F': return "FLOAT";
    case 'I': return "INT";
    case 'L': return "LONG";
    case 'P': return "PERSID";
    case 'S': return "STRING";
    case 'V': return "UNICODE";
    case 'g': return "GET";
    case 'p': return "PUT";
    case 'i': return "INST";
    case 'o': return "OBJ";
    case 0x81: return "NEWOBJ";
    case 0x82: return "EXT1";
    case 0x83: return "EXT2";
    case 0x84: return "EXT4";
    case 0x8f: return "EMPTY_SET";
    case 0x90: return "ADDITEMS";
    case 0x91: return "FROZENSET";
    case 0x92: return "NEWOBJ_EX";
    case 0x96: return "BYTEARRAY8";
    case 0x97: return "NEXT_BUFFER";
    case 0x98: return "READONLY_BUFFER";
    default: return nullptr;
  }
}

/// Note [Restricted unpickling]: the machine keeps Python's stack and mark stack (as positions
/// into one stack) but its values are indices into an arena (pickle_graph::objects). Nothing is
/// ever called: a global is only a name checked against the allow-list, REDUCE records
/// (callable, args), BINPERSID records the id, BUILD is only accepted on dicts (torch sets
/// OrderedDict attributes such as `_metadata` with it) and its state is dropped. Every read is
/// bounds-checked and every count capped, so hostile bytes cost at most memory proportional
/// to their length.
class unpickler {
 public:
  unpickler(const std::uint8_t* data, std::size_t size, const unpickle_options& opt)
      : p_(data), n_(size), opt_(opt) {}

  pickle_graph run() {
    for (;;) {
      op_at_ = pos_;
      const std::uint8_t op = take(1)[0];
      switch (op) {
        case 0x80: {  // PROTO
          const unsigned v = take(1)[0];
          if (v > 5) fail("unsupported pickle protocol ", v);
          break;
        }
        case 0x95: skip_frame(); break;  // FRAME: a length hint only
        case '.': {                      // STOP
          g_.root = pop();
          return std::move(g_);
        }
        case '(':
          check_cap(marks_.size() < opt_.max_marks, "nested MARKs");
          marks_.push_back(stack_.size());
          break;
        case '0':  // POP (Python pops the mark when nothing sits above it)
          if (!marks_.empty() && stack_.size() == marks_.back())
            marks_.pop_back();
          else
            pop();
          break;
        case '1': pop_mark(); break;       // POP_MARK
        case '2': push_ref(top()); break;  // DUP
        case 'N': push(pickle_object{}); break;
        case 0x88: push_bool(true); break;
        case 0x89: push_bool(false); break;
        case 'J': push_int(static_cast<std::int32_t>(le(take(4), 4))); break;  // BININT
        case 'K': push_int(take(1)[0]); break;                                 // BININT1
        case 'M': push_int(static_cast<std::int64_t>(le(take(2), 2))); break;  // BININT2
        case 0x8a: push_long(take(1)[0]); break;                               // LONG1
        case 0x8b: push_long(le(take(4), 4)); break;                           // LONG4
        case 'G': push_float(); break;                                         // BINFLOAT
        case 'X': push_text(pickle_kind::string, le(take(4), 4)); break;       // BINUNICODE
        case 0x8c: push_text(pickle_kind::string, take(1)[0]); break;          // SHORT_BINUNICODE
        case 0x8d: push_text(pickle_kind::string, le(take(8), 8)); break;      // BINUNICODE8
        case 'T': {  // BINSTRING (a Python 2 str; signed length)
          const auto len = static_cast<std::int32_t>(le(take(4), 4));
          if (len < 0) fail("negative BINSTRING length ", len);
          push_text(pickle_kind::string, static_cast<std::uint64_t>(len));
          break;
        }
        case 'U': push_text(pickle_kind::string, take(1)[0]); break;      // SHORT_BINSTRING
        case 'B': push_text(pickle_kind::bytes, le(take(4), 4)); break;   // BINBYTES
        case 'C': push_text(pickle_kind::bytes, take(1)[0]); break;       // SHORT_BINBYTES
        case 0x8e: push_text(pickle_kind::bytes, le(take(8), 8)); break;  // BINBYTES8
        case '}': push_container(pickle_kind::dict); break;               // EMPTY_DICT
        case ']': push_container(pickle_kind::list); break;               // EMPTY_LIST
        case ')': push_container(pickle_kind::tuple); break;              // EMPTY_TUPLE
        case 't': make_from_mark(pickle_kind::tuple); break;              // TUPLE
        case 'l': make_from_mark(pickle_kind::list); break;               // LIST
        case 'd': make_from_mark(pickle_kind::dict); break;               // DICT
        case 0x85: make_tuple(1); break;
        case 0x86: make_tuple(2); break;
        case 0x87: make_tuple(3); break;
        case 'a': {  // APPEND
          const std::uint32_t v = pop();
          add_items(top(), pickle_kind::list, &v, 1);
          break;
        }
        case 'e': add_from_mark(pickle_kind::list); break;  // APPENDS
        case 's': {                                         // SETITEM
          const std::uint32_t value = pop(), key = pop();
          const std::uint32_t kv[2] = {key, value};
          add_items(top(), pickle_kind::dict, kv, 2);
          break;
        }
        case 'u': add_from_mark(pickle_kind::dict); break;  // SETITEMS
        case 'q': put(take(1)[0]); break;                   // BINPUT
        case 'r': put(le(take(4), 4)); break;               // LONG_BINPUT
        case 0x94: put(memo_.size()); break;                // MEMOIZE
        case 'h': get(take(1)[0]); break;                   // BINGET
        case 'j': get(le(take(4), 4)); break;               // LONG_BINGET
        case 'c': {                                         // GLOBAL "module\nname\n"
          std::string module = line();
          push_global(module, line());
          break;
        }
        case 0x93: {  // STACK_GLOBAL
          const std::uint32_t name = pop(), module = pop();
          if (g_.objects[name].kind != pickle_kind::string ||
              g_.objects[module].kind != pickle_kind::string)
            fail("STACK_GLOBAL needs two strings");
          push_global(g_.objects[module].text, g_.objects[name].text);
          break;
        }
        case 'R': reduce(); break;
        case 'b': build(); break;
        case 'Q': {  // BINPERSID
          pickle_object o = object_of(pickle_kind::persistent_id);
          o.items.push_back(pop());
          push(std::move(o));
          break;
        }
        default:
          if (const char* name = pickle_opcode_name(op))
            fail("opcode ", name, " (0x", hex(op), ") is not supported");
          fail("unknown opcode 0x", hex(op));
      }
    }
  }

 private:
  template <class... Parts>
  [[noreturn]] void fail(const Parts&... parts) const {
    ember::detail::fail(errc::io, opt_.source, opt_.source.empty() ? "" : ": ",
                        "unpickle: ", parts..., " (at offset ", op_at_, ")");
  }
  void check_cap(bool ok, const char* what) const {
    if (!ok) fail("too many ", what, " (a limit of unpickle_options)");
  }
  static std::string hex(std::uint8_t b) {
    const char* digits = "0123456789abcdef";
    return {digits[b >> 4], digits[b & 15]};
  }

  const std::uint8_t* take(std::uint64_t k) {
    if (k > n_ - pos_) fail("truncated pickle: ", k, " bytes needed, ", n_ - pos_, " left");
    const std::uint8_t* q = p_ + pos_;
    pos_ += static_cast<std::size_t>(k);
    return q;
  }
  static std::uint64_t le(const std::uint8_t* q, int bytes) noexcept {
    std::uint64_t v = 0;
    for (int i = bytes; i-- > 0;) v = (v << 8) | q[i];
    return v;
  }
  /// A text line of GLOBAL (without the newline), at most 256 bytes.
  std::string line() {
    for (std::size_t k = pos_; k < n_ && k - pos_ <= 256; ++k)
      if (p_[k] == '\n') {
        std::string s(reinterpret_cast<const char*>(p_ + pos_), k - pos_);
        pos_ = k + 1;
        return s;
      }
    fail("GLOBAL without a newline-terminated name of at most 256 bytes");
  }
  void skip_frame() {
    const std::uint64_t len = le(take(8), 8);
    if (len > n_ - pos_) fail("FRAME of ", len, " bytes but only ", n_ - pos_, " left");
  }

  std::uint32_t push(pickle_object o) {
    check_cap(g_.objects.size() < opt_.max_objects, "objects");
    g_.objects.push_back(std::move(o));
    const auto i = static_cast<std::uint32_t>(g_.objects.size() - 1);
    push_ref(i);
    return i;
  }
  void push_ref(std::uint32_t i) {
    check_cap(stack_.size() < opt_.max_stack, "values on the stack");
    stack_.push_back(i);
  }
  std::size_t floor() const noexcept { return marks_.empty() ? 0 : marks_.back(); }
  std::uint32_t pop() {
    if (stack_.size() <= floor()) fail("stack underflow");
    const std::uint32_t v = stack_.back();
    stack_.pop_back();
    return v;
  }
  std::uint32_t top() const {
    if (stack_.size() <= floor()) fail("stack underflow");
    return stack_.back();
  }
  /// Removes the innermost MARK and returns the position of the values above it.
  std::size_t pop_mark() {
    if (marks_.empty()) fail("no MARK on the stack");
    const std::size_t m = marks_.back();
    marks_.pop_back();
    return m;
  }

  static pickle_object object_of(pickle_kind k) {
    pickle_object o;
    o.kind = k;
    return o;
  }
  void push_bool(bool b) {
    pickle_object o = object_of(pickle_kind::boolean);
    o.boolean = b;
    push(std::move(o));
  }
  void push_int(std::int64_t v) {
    pickle_object o = object_of(pickle_kind::integer);
    o.integer = v;
    push(std::move(o));
  }
  void push_long(std::uint64_t len) {  // two's complement, little-endian; must fit int64
    if (len > 8) fail("integer of ", len, " bytes does not fit in 64 bits");
    const std::uint8_t* q = take(len);
    std::uint64_t v = le(q, static_cast<int>(len));
    if (len > 0 && len < 8 && (q[len - 1] & 0x80u)) v |= ~std::uint64_t{0} << (8 * len);
    push_int(static_cast<std::int64_t>(v));
  }
  void push_float() {
    const std::uint8_t* q = take(8);
    std::uint64_t bits = 0;
    for (int i = 0; i < 8; ++i) bits = (bits << 8) | q[i];  // big-endian
    pickle_object o = object_of(pickle_kind::floating);
    o.floating = std::bit_cast<double>(bits);
    push(std::move(o));
  }
  void push_text(pickle_kind k, std::uint64_t len) {
    if (len > opt_.max_string) fail("string of ", len, " bytes exceeds the limit");
    const std::uint8_t* q = take(len);
    pickle_object o = object_of(k);
    o.text.assign(reinterpret_cast<const char*>(q), static_cast<std::size_t>(len));
    push(std::move(o));
  }
  void push_container(pickle_kind k) { push(object_of(k)); }

  void make_tuple(std::size_t k) {
    if (stack_.size() - floor() < k) fail("stack underflow");
    pickle_object o = object_of(pickle_kind::tuple);
    o.items.assign(stack_.end() - static_cast<std::ptrdiff_t>(k), stack_.end());
    stack_.resize(stack_.size() - k);
    push(std::move(o));
  }
  void make_from_mark(pickle_kind k) {
    const std::size_t m = pop_mark();
    pickle_object o = object_of(k);
    if (k == pickle_kind::dict && (stack_.size() - m) % 2 != 0)
      fail("DICT with an odd number of keys and values");
    check_cap(stack_.size() - m <= opt_.max_container, "elements in one container");
    o.items.assign(stack_.begin() + static_cast<std::ptrdiff_t>(m), stack_.end());
    stack_.resize(m);
    push(std::move(o));
  }
  void add_items(std::uint32_t target, pickle_kind k, const std::uint32_t* v, std::size_t count) {
    pickle_object& t = g_.objects[target];
    if (t.kind != k)
      fail(k == pickle_kind::list ? "APPEND" : "SETITEM", " on a ", to_string(t.kind), " (only a ",
           to_string(k), " is accepted)");
    check_cap(t.items.size() + count <= opt_.max_container, "elements in one container");
    t.items.insert(t.items.end(), v, v + count);
  }
  void add_from_mark(pickle_kind k) {
    const std::size_t m = pop_mark();
    if (k == pickle_kind::dict && (stack_.size() - m) % 2 != 0)
      fail("SETITEMS with an odd number of keys and values");
    const std::vector<std::uint32_t> v(stack_.begin() + static_cast<std::ptrdiff_t>(m),
                                       stack_.end());
    stack_.resize(m);
    add_items(top(), k, v.data(), v.size());
  }

  void put(std::uint64_t i) {
    if (memo_.count(i) == 0) check_cap(memo_.size() < opt_.max_memo, "memo entries");
    memo_[i] = top();
  }
  void get(std::uint64_t i) {
    auto it = memo_.find(i);
    if (it == memo_.end()) fail("memo entry ", i, " read before it was written");
    push_ref(it->second);
  }

  const pickle_global* allowed(std::string_view name) const noexcept {
    for (const auto& a : opt_.allowed)
      if (a.name == name) return &a;
    return nullptr;
  }
  void push_global(const std::string& module, const std::string& name) {
    const std::string full = module + "." + name;
    if (allowed(full) == nullptr)
      fail("global '", full, "' is not allowed (only the tensor-rebuilding functions, ",
           "storage types and collections.OrderedDict of a torch state_dict are)");
    pickle_object o = object_of(pickle_kind::global);
    o.text = full;
    push(std::move(o));
  }
  void reduce() {
    const std::uint32_t args = pop(), fn = pop();
    const pickle_object& f = g_.objects[fn];
    if (f.kind != pickle_kind::global) fail("REDUCE of a ", to_string(f.kind), ", not a global");
    if (!allowed(f.text)->callable) fail("REDUCE of '", f.text, "', which is not callable here");
    if (g_.objects[args].kind != pickle_kind::tuple)
      fail("REDUCE of '", f.text, "' with a ", to_string(g_.objects[args].kind),
           " of arguments instead of a tuple");
    if (f.text == "collections.OrderedDict") {
      if (!g_.objects[args].items.empty()) fail("OrderedDict called with arguments");
      push_container(pickle_kind::dict);
      return;
    }
    pickle_object o = object_of(pickle_kind::call);
    o.items = {fn, args};
    push(std::move(o));
  }
  void build() {
    const std::uint32_t state = pop();
    const pickle_object& target = g_.objects[top()];
    if (target.kind != pickle_kind::dict)
      fail("BUILD on a ", to_string(target.kind), " (only OrderedDict attributes are accepted)");
    const pickle_kind k = g_.objects[state].kind;
    if (k != pickle_kind::dict && k != pickle_kind::none && k != pickle_kind::tuple)
      fail("BUILD with a ", to_string(k), " as state");
  }

  const std::uint8_t* p_;
  std::size_t n_;
  std::size_t pos_ = 0;
  std::size_t op_at_ = 0;
  const unpickle_options& opt_;
  pickle_graph g_;
  std::vector<std::uint32_t> stack_;
  std::vector<std::size_t> marks_;
  std::unordered_map<std::uint64_t, std::uint32_t> memo_;
};

}  // namespace detail

/// Unpickles `data` without executing anything (Note [Restricted unpickling]): an unknown or
/// unsupported opcode, a global not in `opt.allowed`, truncation or an exceeded cap is an
/// ember::error (io) naming the opcode or global and the byte offset.
///   em::io::pickle_graph g = em::io::unpickle(pkl.data(), pkl.size());
///   g[g.root].kind == em::io::pickle_kind::dict;
inline pickle_graph unpickle(const std::uint8_t* data, std::size_t size,
                             const unpickle_options& opt = {}) {
  return detail::unpickler(data, size, opt).run();
}

}  // namespace ember::io
