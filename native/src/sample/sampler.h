// Sampler: which allocations the engine records, and what each recorded one
// stands for.
//
// Three modes, chosen per tracing session (SamplingConfig):
//
// - exact: every allocation is recorded and stands for itself.
//
// - Poisson byte sampling with mean interval T (tcmalloc's and Go's model):
//   every byte allocated is "marked" independently with probability 1/T, and
//   an allocation is recorded when it holds at least one mark. A thread
//   keeps the distance to its next mark; an allocation of s bytes moves it
//   on by s + 1 (the +1 makes 0-byte allocations count), so the fast path is
//   one subtraction and a sign test. The distance is exponential with mean T
//   and memoryless, so
//       p(s) = P(recorded) = 1 - exp(-(s + 1) / T),
//   independently for each allocation whatever came before it.
//
// - size ranges (heapprof's model): a sorted list of (exclusive upper bound,
//   probability); an allocation of s bytes is recorded with the probability
//   of the first range whose bound exceeds s, and always (p = 1) at or above
//   the largest bound. One uniform draw per decision.
//
// The estimator (Horvitz-Thompson). A recorded block of s bytes gets the
// weight w = 1/p(s): it stands for w blocks and w*s bytes. For any set of
// allocations A (a stack, a line, the whole heap at a moment),
//       N^ = sum over recorded a in A of w(a),   B^ = sum of w(a)*s(a)
// are unbiased: E[N^] = |A| and E[B^] = sum of s(a), because each a is
// recorded with probability p(a) and then counted 1/p(a) times. Recording
// decisions are independent, so
//       Var(B^) = sum over a in A of s(a)^2 * (1 - p(a)) / p(a),
//       Var(N^) = sum over a in A of (1 - p(a)) / p(a).
// For Poisson sampling with s << T, s^2 (1-p)/p ~ s*T, so Var(B^) ~ T*B: the
// relative standard error of B bytes held in small blocks is about
// sqrt(T/B) (1.1% for 512 MiB at T = 64 KiB, 3.1% at 512 KiB). For s >> T,
// p -> 1 and the block is exact, so a heap whose bytes sit in large blocks
// is estimated far better. docs/sampling.md works through the figures.
//
// Reports need integers (byte and block counts): w*s and w are rounded to
// an integer randomly, up or down, with the probability that keeps the
// expectation (floor(x + u), u uniform in [0, 1)), so rounding adds no bias
// (and at most 1/4 byte or block of variance per record). The u comes from a
// hash of the block's address and a session salt, so the same block always
// gets the same integers: the engine adds them when the block is recorded
// and subtracts the very same ones when it is freed.
//
// mmap'ed memory and blocks reported in custom domains (PyTraceMalloc_Track,
// resource pools) are always recorded exactly: they are few and large, and
// munmap may release part of a mapping, which needs its true extent.
//
// Nothing here calls Python or allocates after configuration.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>
#include <string>

#include "model/allocator.h"
#include "model/estimate.h"

namespace heapscope {

enum class SamplingMode : uint8_t { kExact = 0, kPoisson = 1, kSizeRanges = 2 };

// The default mean interval of Poisson sampling, from measurement
// (bench/run_sampling.py --intervals, docs/sampling.md): from 512 KiB down
// to 32 KiB the cost is that of the hooks themselves, within the noise, and
// the error shrinks as sqrt(T): 64 KiB has 1/2.8 of 512 KiB's error.
inline constexpr uint64_t kDefaultSamplingInterval = 64 * 1024;
// Bounds that keep every weight below 2^32 (a block count fits 32 bits).
inline constexpr uint64_t kMaxSamplingInterval = uint64_t{1} << 31;
inline constexpr double kMinRangeProbability = 1e-9;
// Size ranges are kept in a fixed array: a hook may still be reading the
// configuration while a new session installs another, so it never points
// into memory that could be freed.
inline constexpr uint32_t kMaxSizeRanges = 64;

struct SizeRange {
    uint64_t upper_bound;  // exclusive
    double probability;    // 0, or in [kMinRangeProbability, 1]
};

struct SamplingConfig {
    SamplingMode mode = SamplingMode::kExact;
    uint64_t mean_interval = kDefaultSamplingInterval;  // Poisson only
    std::array<SizeRange, kMaxSizeRanges> ranges{};     // size ranges only, sorted by bound
    uint32_t range_count = 0;
    uint64_t seed = 0;                                  // 0: a fresh seed per session

    bool exact() const { return mode == SamplingMode::kExact; }
    // p(size), the probability that an allocation of `size` bytes is recorded.
    double probability(uint64_t size) const {
        switch (mode) {
            case SamplingMode::kExact: return 1.0;
            case SamplingMode::kPoisson:
                return -std::expm1(-(static_cast<double>(size) + 1.0) / static_cast<double>(mean_interval));
            case SamplingMode::kSizeRanges:
                for (uint32_t i = 0; i < range_count; ++i) {
                    if (size < ranges[i].upper_bound) return ranges[i].probability;
                }
                return 1.0;
        }
        return 1.0;
    }
    // The integer estimate for a recorded block at `address` (which, with
    // the seed, picks the rounding).
    Estimate estimate(uint64_t size, uint64_t address) const;

    // Appends a range; false if the array is full.
    bool add_range(uint64_t upper_bound, double probability) {
        if (range_count == kMaxSizeRanges) return false;
        ranges[range_count++] = SizeRange{upper_bound, probability};
        return true;
    }
    // Checks the values; empty if valid, else a message for a ValueError.
    std::string validate() const;
    // The form kept in capture metadata: "exact", "poisson:524288",
    // "ranges:128=0.0001,8192=0.1" (probabilities to 17 significant digits).
    std::string describe() const;
    // Parses describe()'s form; false (and `*error`) if it is not one.
    static bool parse(const std::string& text, SamplingConfig* out, std::string* error);
};

// Whether sampling applies to blocks from `allocator` (see the header comment).
inline bool sampled_allocator(Allocator allocator) {
    return allocator != Allocator::kMmap && allocator != Allocator::kTrack;
}

// One thread's sampling state, kept in its hook state (plain TLS data).
struct ThreadSampler {
    int64_t bytes_until_mark;  // Poisson: bytes left before the next mark
    uint64_t rng;              // xorshift64* state, 0: not seeded yet
    uint64_t session;          // the engine session the state belongs to
};

// In a forked child: the next draws come from streams of the child's own, so
// that parent and child do not make the same decisions.
void reseed_sampler_streams_in_child();

// Draws the next gap or uniform for `state` (seeding it first when it
// belongs to another session). Called on the slow path only.
double next_uniform(ThreadSampler* state, uint64_t seed);
int64_t next_gap(ThreadSampler* state, uint64_t seed, uint64_t mean_interval);

bool should_sample_slow(const SamplingConfig& config, ThreadSampler* state, uint64_t session, uint64_t size);

// Poisson's fast path alone: true, with the allocation counted, when the
// sampler passes over `size` bytes; false, with nothing counted, when
// should_sample must decide (a mark falls in the block, the counter is left
// from an earlier session, or the mode is not Poisson's).
inline bool passes_over(const SamplingConfig& config, ThreadSampler* state, uint64_t session, uint64_t size) {
    if (config.mode != SamplingMode::kPoisson || state->session != session) return false;
    const int64_t left = state->bytes_until_mark - static_cast<int64_t>(size + 1);
    if (left <= 0) return false;
    state->bytes_until_mark = left;
    return true;
}

// The decision for one allocation of `size` bytes on the calling thread.
// Poisson's fast path is a session compare and a subtraction: a counter
// left from an earlier session (another interval, or none) must not be used,
// so it is zeroed and the slow path draws a fresh one.
inline bool should_sample(const SamplingConfig& config, ThreadSampler* state, uint64_t session, uint64_t size) {
    if (config.mode == SamplingMode::kPoisson) {
        if (passes_over(config, state, session, size)) return false;
        if (state->session != session) [[unlikely]] state->bytes_until_mark = 0;
        state->bytes_until_mark -= static_cast<int64_t>(size + 1);
        return should_sample_slow(config, state, session, size);
    }
    if (config.mode == SamplingMode::kExact) return true;
    double p = config.probability(size);
    if (p >= 1.0) return true;
    if (p <= 0.0) return false;
    if (state->session != session) state->rng = 0;
    state->session = session;
    return next_uniform(state, config.seed) < p;
}

}  // namespace heapscope
