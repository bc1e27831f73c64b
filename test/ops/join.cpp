// Tests for include/ember/ops/join (being written).
#include <catch2/catch.hpp>
