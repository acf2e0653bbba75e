// Calls the installed library without a GPU: check() must reject a batch of 0 with a message.
#include <cstdio>

#include "mla/decode.h"

int main() {
  mla::DecodeArgs args;  // default: batch = 0, null pointers
  const mla::Status st = mla::check(args);
  std::printf("mla::check -> %s\n", st.to_string().c_str());
  return st.ok() || st.message().empty() ? 1 : 0;
}
