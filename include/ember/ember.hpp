// The umbrella header: includes every public ember header, nothing else.
#pragma once

#include <ember/core/allocator.hpp>
#include <ember/core/config.hpp>
#include <ember/core/device.hpp>
#include <ember/core/dtype.hpp>
#include <ember/core/error.hpp>
#include <ember/core/half.hpp>
#include <ember/core/random.hpp>
#include <ember/core/shape.hpp>
#include <ember/core/small_vector.hpp>
#include <ember/core/storage.hpp>
#include <ember/core/view_strides.hpp>
#include <ember/eval/strided.hpp>
#include <ember/io/print.hpp>
#include <ember/ops/factory.hpp>
#include <ember/tensor.hpp>
