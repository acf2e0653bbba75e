// Placeholder until the benchmark lands (issue 5).
#include <cstdio>
int main() { std::fprintf(stderr, "mla-bench: not implemented yet\n"); return 2; }
