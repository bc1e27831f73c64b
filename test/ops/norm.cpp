// Tests for include/ember/ops/norm (being written).
#include <catch2/catch.hpp>
