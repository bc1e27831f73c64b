// Precompiled header of the test executables (Meson's cpp_pch; Note [Test compile time] in
// test/meson.build): the whole library and Catch2, parsed once per executable instead of once per
// translation unit. Every test file still includes what it uses.
#pragma once
#include <ember/ember.hpp>

#include <catch2/catch.hpp>
