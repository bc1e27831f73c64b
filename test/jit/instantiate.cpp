// The jit test executable's one instantiation of the graph interpreter: the other jit test files
// include <ember/jit/extern.hpp>, so they compile none of it (Note [Interpreter instantiation]).
#include <ember/ember.hpp>
#include <ember/jit/extern.hpp>

EMBER_JIT_INSTANTIATE_INTERPRETER()
