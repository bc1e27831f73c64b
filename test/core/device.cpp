// Tests of include/ember/core/device.hpp: cpu/cuda devices, equality, names, bad indices.
#include <ember/core/device.hpp>

#include <catch2/catch.hpp>
#include <sstream>

namespace em = ember;

TEST_CASE("devices compare and print", "[device]") {
  CHECK(em::cpu == em::device::cpu());
  CHECK(em::cpu.is_cpu());
  CHECK(em::device::cuda(1).is_cuda());
  CHECK(em::device::cuda() == em::device::cuda(0));
  CHECK_FALSE(em::device::cuda(0) == em::device::cuda(1));
  CHECK_FALSE(em::cpu == em::device::cuda(0));
  std::ostringstream os;
  os << em::cpu << " " << em::device::cuda(3);
  CHECK(os.str() == "cpu cuda:3");
  CHECK_THROWS_AS(em::device::cuda(-1), em::error);
}
