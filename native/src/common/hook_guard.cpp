#include "common/hook_guard.h"

namespace heapscope {

constinit thread_local ThreadGuardState t_guard_state __attribute__((tls_model("initial-exec"))) = {false, false};

}  // namespace heapscope
