// Tests for include/ember/ops/attention (being written).
#include <catch2/catch.hpp>
