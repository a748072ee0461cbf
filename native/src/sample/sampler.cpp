#include "sample/sampler.h"

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <limits>

namespace heapscope {

namespace {
uint64_t mix64(uint64_t x) {  // splitmix64's finaliser: a bijection that spreads every bit
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

double unit_interval(uint64_t bits) { return static_cast<double>(bits >> 11) * 0x1.0p-53; }  // [0, 1)

// Threads get distinct streams from one seed, in the order they first sample.
std::atomic<uint64_t> g_next_stream{0};

uint64_t next_random(ThreadSampler* state, uint64_t seed) {
    if (state->rng == 0) {
        state->rng = mix64(seed ^ mix64(g_next_stream.fetch_add(1, std::memory_order_relaxed)));
        if (state->rng == 0) state->rng = 1;  // xorshift's one forbidden state
    }
    uint64_t x = state->rng;  // xorshift64* (Vigna): fast, and good enough for coin flips
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    state->rng = x;
    return x * 0x2545F4914F6CDD1Dull;
}
}  // namespace

double next_uniform(ThreadSampler* state, uint64_t seed) { return unit_interval(next_random(state, seed)); }

int64_t next_gap(ThreadSampler* state, uint64_t seed, uint64_t mean_interval) {
    // -T ln(U), U uniform in (0, 1]: exponential with mean T. Rounded up to
    // whole bytes, so that P(gap <= k) = 1 - exp(-k/T) holds exactly for
    // integer k (see should_sample_slow).
    double u = 1.0 - next_uniform(state, seed);
    double gap = std::ceil(-static_cast<double>(mean_interval) * std::log(u));
    constexpr double kLargest = static_cast<double>(std::numeric_limits<int64_t>::max() / 2);
    if (!(gap < kLargest)) gap = kLargest;
    return gap < 1.0 ? 1 : static_cast<int64_t>(gap);
}

bool should_sample_slow(const SamplingConfig& config, ThreadSampler* state, uint64_t session, uint64_t size) {
    const int64_t step = static_cast<int64_t>(size + 1);
    if (state->session != session) {
        // The thread's first allocation in this session (its counter is
        // still zero, or left from an earlier session): measure from a fresh
        // mark distance, drawn from the start of this block.
        state->session = session;
        state->rng = 0;
        int64_t gap = next_gap(state, config.seed, config.mean_interval);
        if (gap > step) {
            state->bytes_until_mark = gap - step;
            return false;
        }
    }
    // A mark fell inside this block. The distance from its end to the next
    // mark is again exponential (memorylessness): draw it afresh.
    state->bytes_until_mark = next_gap(state, config.seed, config.mean_interval);
    return true;
}

Estimate SamplingConfig::estimate(uint64_t size, uint64_t address) const {
    if (mode == SamplingMode::kExact) return Estimate{size, 1};
    double p = probability(size);
    if (p >= 1.0 || p <= 0.0) return Estimate{size, 1};  // p = 0: never recorded; keep the truth
    double weight = 1.0 / p;
    uint64_t h = mix64(address ^ mix64(seed));
    double bytes = std::floor(weight * static_cast<double>(size) + unit_interval(h));
    double count = std::floor(weight + unit_interval(mix64(h)));
    return Estimate{static_cast<uint64_t>(bytes), static_cast<uint64_t>(count)};
}

std::string SamplingConfig::validate() const {
    switch (mode) {
        case SamplingMode::kExact: return {};
        case SamplingMode::kPoisson:
            if (mean_interval < 1 || mean_interval > kMaxSamplingInterval) {
                return "the sampling interval must be in range [1; " + std::to_string(kMaxSamplingInterval) +
                       "] bytes";
            }
            return {};
        case SamplingMode::kSizeRanges:
            if (range_count == 0) return "size-range sampling needs at least one range";
            for (uint32_t i = 0; i < range_count; ++i) {
                const SizeRange& range = ranges[i];
                if (range.upper_bound == 0) return "a size range's upper bound must be at least 1 byte";
                if (i > 0 && range.upper_bound <= ranges[i - 1].upper_bound) {
                    return "size ranges must have distinct upper bounds, in increasing order";
                }
                double p = range.probability;
                if (!(p == 0.0 || (p >= kMinRangeProbability && p <= 1.0))) {
                    return "a sampling probability must be 0 or in range [1e-09; 1]";
                }
            }
            return {};
    }
    return "unknown sampling mode";
}

std::string SamplingConfig::describe() const {
    switch (mode) {
        case SamplingMode::kExact: return "exact";
        case SamplingMode::kPoisson: return "poisson:" + std::to_string(mean_interval);
        case SamplingMode::kSizeRanges: {
            std::string text = "ranges:";
            char number[64];
            for (uint32_t i = 0; i < range_count; ++i) {
                std::snprintf(number, sizeof number, "%.17g", ranges[i].probability);
                if (i) text += ',';
                text += std::to_string(ranges[i].upper_bound) + '=' + number;
            }
            return text;
        }
    }
    return "exact";
}

bool SamplingConfig::parse(const std::string& text, SamplingConfig* out, std::string* error) {
    SamplingConfig config;
    auto fail = [&](const char* why) {
        *error = "bad sampling description '" + text + "': " + why;
        return false;
    };
    auto read_unsigned = [](const char* begin, char** end, uint64_t* value) {
        if (*begin < '0' || *begin > '9') return false;
        errno = 0;
        *value = std::strtoull(begin, end, 10);
        return errno == 0;
    };
    if (text == "exact") {
        *out = config;
        return true;
    }
    if (text.rfind("poisson:", 0) == 0) {
        config.mode = SamplingMode::kPoisson;
        const char* begin = text.c_str() + 8;
        char* end = nullptr;
        if (!read_unsigned(begin, &end, &config.mean_interval) || *end != '\0') return fail("not an interval");
    } else if (text.rfind("ranges:", 0) == 0) {
        config.mode = SamplingMode::kSizeRanges;
        const char* cursor = text.c_str() + 7;
        for (;;) {
            SizeRange range{};
            char* end = nullptr;
            if (!read_unsigned(cursor, &end, &range.upper_bound) || *end != '=') return fail("not bound=probability");
            cursor = end + 1;
            errno = 0;
            range.probability = std::strtod(cursor, &end);
            if (end == cursor || errno != 0) return fail("not a probability");
            if (!config.add_range(range.upper_bound, range.probability)) return fail("too many ranges");
            if (*end == '\0') break;
            if (*end != ',') return fail("ranges are separated by commas");
            cursor = end + 1;
        }
    } else {
        return fail("unknown mode");
    }
    std::string invalid = config.validate();
    if (!invalid.empty()) {
        *error = "bad sampling description '" + text + "': " + invalid;
        return false;
    }
    *out = config;
    return true;
}

}  // namespace heapscope
