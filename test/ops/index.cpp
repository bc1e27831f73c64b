// Tests for include/ember/ops/index (being written).
#include <catch2/catch.hpp>
