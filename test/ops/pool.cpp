// Tests for include/ember/ops/pool (being written).
#include <catch2/catch.hpp>
