// Driver of the generated header self-containment test: linking proves the headers define no
// non-inline symbol twice; reaching main means every header TU compiled.
#include <cstdio>
int main() {
  std::puts("every public header compiles on its own");
  return 0;
}
