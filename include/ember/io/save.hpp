// ember::save / ember::load: the public entry points for state_dicts on disk (safetensors).
#pragma once

#include <ember/io/safetensors.hpp>
#include <ember/state_dict.hpp>

#include <string>

namespace ember {

/// Saves a state_dict (parameters, buffers, optimizer state, metadata) as a .safetensors file;
/// a failed save keeps the previous file (see io::save_safetensors):
///   em::save(net.state_dict(), "net.safetensors");
template <int = 0>  // Note [Deferred instantiation]
void save(const state_dict& sd, const std::string& path) { io::save_safetensors(sd, path); }

/// Loads a .safetensors file into a state_dict, tensors in file order (see
/// io::load_safetensors); a missing or malformed file is an ember::error (io):
///   net.load_state_dict(em::load("net.safetensors"));
inline state_dict load(const std::string& path) { return io::load_safetensors(path); }

}  // namespace ember
