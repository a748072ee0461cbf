// The sampler's decisions and estimates, against the statistics its header
// states: inclusion probabilities, unbiased totals, variance within bounds.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "sample/sampler.h"

namespace heapscope {
namespace {

SamplingConfig poisson(uint64_t interval, uint64_t seed = 12345) {
    SamplingConfig config;
    config.mode = SamplingMode::kPoisson;
    config.mean_interval = interval;
    config.seed = seed;
    return config;
}

SamplingConfig heapprof_defaults(uint64_t seed = 777) {
    SamplingConfig config;
    config.mode = SamplingMode::kSizeRanges;
    config.add_range(128, 1e-4);
    config.add_range(8192, 0.1);
    config.seed = seed;
    return config;
}

TEST(Sampler, PoissonInclusionProbabilityMatchesTheModel) {
    // Allocations of one size: the fraction recorded converges to
    // 1 - exp(-(s+1)/T). Binomial standard error; 5 sigma.
    const uint64_t interval = 4096;
    for (uint64_t size : {0ull, 15ull, 100ull, 1000ull, 4095ull, 20000ull}) {
        SamplingConfig config = poisson(interval, 99 + size);
        ThreadSampler state{};
        const int n = 200000;
        int recorded = 0;
        for (int i = 0; i < n; ++i) recorded += should_sample(config, &state, 1, size);
        double p = config.probability(size);
        EXPECT_NEAR(p, 1.0 - std::exp(-(double(size) + 1.0) / interval), 1e-12);
        double sigma = std::sqrt(p * (1 - p) / n);
        EXPECT_NEAR(double(recorded) / n, p, 5 * sigma + 1e-9) << "size " << size;
    }
}

TEST(Sampler, SizeRangesUseExclusiveUpperBounds) {
    SamplingConfig config = heapprof_defaults();
    EXPECT_EQ(config.probability(0), 1e-4);
    EXPECT_EQ(config.probability(127), 1e-4);
    EXPECT_EQ(config.probability(128), 0.1);
    EXPECT_EQ(config.probability(8191), 0.1);
    EXPECT_EQ(config.probability(8192), 1.0);
    ThreadSampler state{};
    for (int i = 0; i < 1000; ++i) EXPECT_TRUE(should_sample(config, &state, 1, 1 << 20));
    SamplingConfig never;
    never.mode = SamplingMode::kSizeRanges;
    never.add_range(64, 0.0);
    never.seed = 5;
    for (int i = 0; i < 1000; ++i) EXPECT_FALSE(should_sample(never, &state, 1, 10));
}

// Simulates a heap of mixed sizes and checks that the estimated totals
// (bytes and blocks) fall within 4 standard deviations of the truth, with
// the deviation taken from the variance formula in sampler.h.
void expect_unbiased(const SamplingConfig& config, const std::vector<uint64_t>& sizes) {
    ThreadSampler state{};
    double true_bytes = 0, est_bytes = 0, est_count = 0, var_bytes = 0, var_count = 0;
    uint64_t address = 0x10000;
    for (uint64_t size : sizes) {
        true_bytes += double(size);
        double p = config.probability(size);
        var_bytes += double(size) * double(size) * (1 - p) / p;
        var_count += (1 - p) / p;
        address += 64;
        if (!should_sample(config, &state, 1, size)) continue;
        Estimate e = config.estimate(size, address);
        est_bytes += double(e.bytes);
        est_count += double(e.count);
    }
    // Randomised rounding adds at most 1/4 per record to each variance.
    double n = double(sizes.size());
    EXPECT_NEAR(est_bytes, true_bytes, 4 * std::sqrt(var_bytes + n / 4)) << config.describe();
    EXPECT_NEAR(est_count, n, 4 * std::sqrt(var_count + n / 4)) << config.describe();
}

std::vector<uint64_t> mixed_sizes(size_t n, uint32_t seed) {
    std::mt19937_64 rng(seed);
    std::vector<uint64_t> sizes(n);
    for (auto& s : sizes) {
        switch (rng() % 4) {
            case 0: s = rng() % 64; break;
            case 1: s = 64 + rng() % 1024; break;
            case 2: s = 1024 + rng() % 65536; break;
            default: s = 65536 + rng() % (4 << 20); break;
        }
    }
    return sizes;
}

TEST(Sampler, PoissonEstimatesAreUnbiased) {
    auto sizes = mixed_sizes(400000, 1);
    for (uint64_t seed = 1; seed <= 5; ++seed) expect_unbiased(poisson(512 * 1024, seed), sizes);
    expect_unbiased(poisson(64 * 1024, 9), sizes);
}

TEST(Sampler, SizeRangeEstimatesAreUnbiased) {
    auto sizes = mixed_sizes(400000, 2);
    for (uint64_t seed = 1; seed <= 5; ++seed) expect_unbiased(heapprof_defaults(seed), sizes);
    SamplingConfig odd;
    odd.mode = SamplingMode::kSizeRanges;
    odd.add_range(100, 0.3);
    odd.add_range(5000, 0.77);
    odd.seed = 3;
    expect_unbiased(odd, sizes);
}

TEST(Sampler, EstimateRoundsWithoutBias) {
    // p = 0.3 for 1-byte blocks: weight 3.33..., so each record's count is 3
    // or 4; over many addresses the mean is the weight.
    SamplingConfig config;
    config.mode = SamplingMode::kSizeRanges;
    config.add_range(100, 0.3);
    config.seed = 11;
    double count = 0, bytes = 0;
    const int n = 100000;
    for (int i = 0; i < n; ++i) {
        Estimate e = config.estimate(7, 0x1000 + 16 * uint64_t(i));
        EXPECT_TRUE(e.count == 3 || e.count == 4);
        count += double(e.count);
        bytes += double(e.bytes);
        // The same block always gets the same integers.
        Estimate again = config.estimate(7, 0x1000 + 16 * uint64_t(i));
        EXPECT_EQ(again.bytes, e.bytes);
        EXPECT_EQ(again.count, e.count);
    }
    EXPECT_NEAR(count / n, 1 / 0.3, 0.01);
    EXPECT_NEAR(bytes / n, 7 / 0.3, 0.02);
    EXPECT_EQ(SamplingConfig{}.estimate(123, 0x5000).bytes, 123u);
    EXPECT_EQ(SamplingConfig{}.estimate(123, 0x5000).count, 1u);
}

TEST(Sampler, FirstDecisionOfASessionStartsAFreshGap) {
    // A new thread (zeroed state) must not record its first allocation for
    // sure: over many fresh states, the first 1-byte allocation is recorded
    // with probability p(1), not 1.
    SamplingConfig config = poisson(1 << 20, 8);
    int recorded = 0;
    for (int i = 0; i < 20000; ++i) {
        ThreadSampler state{};
        recorded += should_sample(config, &state, 1, 1);
    }
    EXPECT_LT(recorded, 10);  // p(1) ~ 2e-6: expected 0.04
}

TEST(Sampler, PassingOverDecidesAsShouldSampleDoes) {
    // The hooks' unguarded path: where passes_over decides, should_sample
    // decides the same from the same state; where it cannot, it counts
    // nothing, so that should_sample then counts the block once.
    SamplingConfig config = poisson(4096, 31);
    ThreadSampler state{};
    std::mt19937_64 sizes(5);
    int passed = 0, recorded = 0;
    for (int i = 0; i < 200000; ++i) {
        const uint64_t size = sizes() % 600;
        const uint64_t session = i < 100000 ? 1 : 2;  // a new session half-way: the counter is not carried over
        ThreadSampler before = state;
        if (passes_over(config, &state, session, size)) {
            ++passed;
            ASSERT_FALSE(should_sample(config, &before, session, size)) << "allocation " << i;
            ASSERT_EQ(state.bytes_until_mark, before.bytes_until_mark) << "allocation " << i;
            ASSERT_GT(state.bytes_until_mark, 0);
        } else {
            ASSERT_EQ(state.bytes_until_mark, before.bytes_until_mark) << "allocation " << i;
            recorded += should_sample(config, &state, session, size);
        }
        ASSERT_EQ(state.session, session);
    }
    EXPECT_GT(recorded, 1000);
    EXPECT_GT(passed, 150000);
    // Other modes always leave the decision to should_sample, counting nothing.
    ThreadSampler ranges{};
    EXPECT_FALSE(passes_over(heapprof_defaults(), &ranges, 1, 16));
    EXPECT_EQ(ranges.bytes_until_mark, 0);
}

TEST(Sampler, DescribeParseRoundTripAndErrors) {
    for (const SamplingConfig& config : {SamplingConfig{}, poisson(524288, 0), heapprof_defaults(0)}) {
        SamplingConfig parsed;
        std::string error;
        ASSERT_TRUE(SamplingConfig::parse(config.describe(), &parsed, &error)) << error;
        EXPECT_EQ(parsed.describe(), config.describe());
        for (uint64_t size : {0ull, 100ull, 1000ull, 100000ull}) EXPECT_EQ(parsed.probability(size), config.probability(size));
    }
    const char* bad[] = {"", "poisson:", "poisson:0", "poisson:x", "poisson:4294967296", "ranges:",
                         "ranges:128", "ranges:128=2", "ranges:128=0.5,64=0.5", "ranges:128=0.5,128=0.1",
                         "ranges:0=0.5", "ranges:128=1e-12", "ranges:128=0.5;", "sometimes"};
    for (const char* text : bad) {
        SamplingConfig parsed;
        std::string error;
        EXPECT_FALSE(SamplingConfig::parse(text, &parsed, &error)) << text;
        EXPECT_NE(error.find("bad sampling description"), std::string::npos) << text;
    }
}

TEST(RecordedAddressFilter, CountsAndSaturates) {
    static RecordedAddressFilter filter;  // 64 KiB: not on the stack
    filter.clear();
    EXPECT_FALSE(filter.may_contain(0x1000));
    filter.add(0x1000);
    filter.add(0x1000);
    EXPECT_TRUE(filter.may_contain(0x1000));
    filter.remove(0x1000);
    EXPECT_TRUE(filter.may_contain(0x1000));
    filter.remove(0x1000);
    EXPECT_FALSE(filter.may_contain(0x1000));
    filter.remove(0x1000);  // never below zero
    EXPECT_FALSE(filter.may_contain(0x1000));
    for (int i = 0; i < 300; ++i) filter.add(0x2000);
    for (int i = 0; i < 300; ++i) filter.remove(0x2000);
    EXPECT_TRUE(filter.may_contain(0x2000));  // saturated: stays set, never a false "absent"
    // Addresses 1 MiB apart share a counter: a false "maybe", never a false "absent".
    filter.add(0x300000);
    EXPECT_TRUE(filter.may_contain(0x400000));
    EXPECT_FALSE(filter.may_contain(0x300010));
}

}  // namespace
}  // namespace heapscope
