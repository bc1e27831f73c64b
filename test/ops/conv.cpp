// Tests for include/ember/ops/conv (being written).
#include <catch2/catch.hpp>
