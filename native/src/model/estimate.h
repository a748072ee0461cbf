// Estimate: what a recorded block stands for, as integers. Exact blocks are
// {size, 1}; a sampled block's figures are unbiased estimates (sample/sampler.h
// says how they are made and rounded).
#pragma once

#include <cstdint>

namespace heapscope {

struct Estimate {
    uint64_t bytes;
    uint64_t count;
};

}  // namespace heapscope
