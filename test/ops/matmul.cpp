// Tests for include/ember/ops/matmul (being written).
#include <catch2/catch.hpp>
