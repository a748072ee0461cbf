// The resource-pool registry (native/src/pools): exact counts and sizes,
// replacement and serials, kinds, interned sources, the creation observer,
// and threads registering and releasing at once.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "pools/pool_registry.h"

using namespace heapscope::pools;

namespace {

struct Totals {
    uint64_t count = 0, bytes = 0;
};

Totals totals(const Pool& pool) {
    Totals t;
    pool.totals(&t.count, &t.bytes);
    return t;
}

}  // namespace

TEST(Pools, NamesGiveOnePoolEachWithItsOwnDomain) {
    Registry registry;
    Pool* images = registry.pool("images");
    ASSERT_NE(images, nullptr);
    EXPECT_EQ(registry.pool("images"), images);
    EXPECT_EQ(registry.find("images"), images);
    Pool* tensors = registry.pool("tensors");
    EXPECT_NE(tensors, images);
    EXPECT_EQ(images->domain(), kFirstDomain);
    EXPECT_EQ(tensors->domain(), kFirstDomain + 1);
    EXPECT_EQ(registry.pool_count(), 2u);
    EXPECT_EQ(registry.at(1), tensors);
    EXPECT_EQ(registry.at(2), nullptr);
    EXPECT_EQ(registry.find("missing"), nullptr);
}

TEST(Pools, BadNamesAreRefused) {
    Registry registry;
    EXPECT_EQ(registry.pool(""), nullptr);
    EXPECT_EQ(registry.pool(std::string_view("a\0b", 3)), nullptr);
    EXPECT_EQ(registry.pool(std::string(kMaxNameBytes + 1, 'x')), nullptr);
    EXPECT_NE(registry.pool(std::string(kMaxNameBytes, 'x')), nullptr);
    EXPECT_EQ(registry.pool_count(), 1u);
}

TEST(Pools, CountsAndSizesAreExact) {
    Registry registry;
    Pool& pool = *registry.pool("p");
    for (uint64_t id = 0; id < 1000; ++id) ASSERT_NE(pool.track(id * 16, id + 1, 0, 0), 0u);
    EXPECT_EQ(totals(pool).count, 1000u);
    EXPECT_EQ(totals(pool).bytes, 1000u * 1001u / 2);
    for (uint64_t id = 0; id < 1000; id += 2) EXPECT_TRUE(pool.release(id * 16));
    EXPECT_EQ(totals(pool).count, 500u);
    EXPECT_EQ(totals(pool).bytes, 1000u * 1001u / 2 - 500u * 500u);  // the odd sizes 1, 3, ... 999 went
    EXPECT_FALSE(pool.release(0));  // released already
    EXPECT_FALSE(pool.release(12345));
}

TEST(Pools, TrackingAnAliveIdReplacesIt) {
    Registry registry;
    Pool& pool = *registry.pool("p");
    uint64_t first = pool.track(7, 100, 0, 0);
    uint64_t second = pool.track(7, 30, 0, 0);
    EXPECT_NE(first, second);
    EXPECT_EQ(totals(pool).count, 1u);
    EXPECT_EQ(totals(pool).bytes, 30u);
    // A late release of the first registration leaves the second alone.
    EXPECT_FALSE(pool.release(7, first));
    EXPECT_EQ(totals(pool).count, 1u);
    EXPECT_TRUE(pool.release(7, second));
    EXPECT_EQ(totals(pool).bytes, 0u);
}

TEST(Pools, CollectListsEveryLiveResource) {
    Registry registry;
    Pool& pool = *registry.pool("p");
    uint32_t rgb = registry.kind_id("rgb");
    EXPECT_EQ(registry.kind_id("rgb"), rgb);
    EXPECT_NE(registry.kind_id("gray"), rgb);
    EXPECT_EQ(registry.kind_id(""), Registry::kNoKind);
    EXPECT_EQ(registry.kind_name(rgb), "rgb");
    EXPECT_EQ(registry.kind_name(Registry::kNoKind), "");
    pool.track(1, 10, rgb, 0);
    pool.track(2, 20, 0, 0);
    pool.track(3, 30, rgb, 0);
    pool.release(2);
    std::vector<ResourceInfo> rows;
    pool.collect(&rows);
    std::sort(rows.begin(), rows.end(), [](const ResourceInfo& a, const ResourceInfo& b) { return a.id < b.id; });
    ASSERT_EQ(rows.size(), 2u);
    EXPECT_EQ(rows[0].id, 1u);
    EXPECT_EQ(rows[0].size, 10u);
    EXPECT_EQ(rows[0].kind, rgb);
    EXPECT_EQ(rows[1].id, 3u);
    EXPECT_EQ(rows[1].size, 30u);
    EXPECT_EQ(rows[0].pool, pool.index());
    EXPECT_GT(rows[0].created_ns, 1600000000LL * 1000000000LL);  // a wall-clock time, after 2020
    EXPECT_LE(rows[0].created_ns, rows[1].created_ns);
}

TEST(Pools, SourcesAreInternedAndKept) {
    Registry registry;
    Source a;
    a.python.push_back(SourceFrame{"make", "app.py", 12, true});
    a.native = {0x1000, 0x2000};
    Source b = a;
    uint32_t id = registry.intern_source(a);
    EXPECT_NE(id, Registry::kNoSource);
    EXPECT_EQ(registry.intern_source(b), id);
    b.python[0].lineno = 13;
    EXPECT_NE(registry.intern_source(b), id);
    EXPECT_EQ(registry.intern_source(Source{}), Registry::kNoSource);
    Source back = registry.source(id);
    ASSERT_EQ(back.python.size(), 1u);
    EXPECT_EQ(back.python[0], a.python[0]);
    EXPECT_EQ(back.native, a.native);
    EXPECT_TRUE(registry.source(9999).python.empty());
}

TEST(Pools, CaptureSourceUsesThePythonHookAndTheNativeStack) {
    Registry registry;
    Hooks hooks;
    hooks.python_stack = [](std::vector<SourceFrame>* out, uint32_t) {
        out->push_back(SourceFrame{"f", "x.py", 3, true});
    };
    registry.set_hooks(hooks);
    Source without_native = registry.source(registry.capture_source(false, 0));
    ASSERT_EQ(without_native.python.size(), 1u);
    EXPECT_EQ(without_native.python[0].function, "f");
    EXPECT_TRUE(without_native.native.empty());
}

TEST(Pools, TheObserverHearsOfEveryPoolOnce) {
    Registry registry;
    registry.pool("before");
    std::vector<std::pair<uint32_t, std::string>> heard;
    auto observer = [](void* context, uint32_t domain, const std::string& name) {
        static_cast<std::vector<std::pair<uint32_t, std::string>>*>(context)->emplace_back(domain, name);
    };
    registry.set_observer(observer, &heard);
    registry.pool("after");
    registry.pool("after");  // exists: not announced again
    registry.set_observer(nullptr, nullptr);
    registry.pool("unheard");
    ASSERT_EQ(heard.size(), 2u);
    EXPECT_EQ(heard[0], std::make_pair(kFirstDomain, std::string("before")));
    EXPECT_EQ(heard[1], std::make_pair(kFirstDomain + 1, std::string("after")));
}

TEST(Pools, DetailedByDefaultAppliesToPoolsMadeLater) {
    Registry registry;
    Pool* early = registry.pool("early");
    EXPECT_FALSE(early->detailed());
    registry.set_detailed_by_default(true);
    EXPECT_TRUE(registry.pool("late")->detailed());
    EXPECT_FALSE(early->detailed());  // each existing pool is switched by its caller
}

// Eight threads register and release in one pool and make pools and kinds
// at once; at every quiet moment the totals are exactly what they left.
TEST(Pools, ExactUnderThreads) {
    Registry registry;
    constexpr int kThreads = 8;
    constexpr uint64_t kPerThread = 20000;
    Pool& pool = *registry.pool("shared");
    std::atomic<bool> go{false};
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
        threads.emplace_back([&, t] {
            while (!go.load()) std::this_thread::yield();
            const uint32_t kind = registry.kind_id("kind" + std::to_string(t % 3));
            registry.pool("pool" + std::to_string(t % 4));
            for (uint64_t i = 0; i < kPerThread; ++i) {
                const uint64_t id = (static_cast<uint64_t>(t) << 32) | i;
                ASSERT_NE(pool.track(id, i % 97 + 1, kind, 0), 0u);
                // Keep every third; release the rest at once or a step later.
                if (i % 3 != 0) {
                    ASSERT_TRUE(pool.release(id));
                }
            }
        });
    }
    go = true;
    for (std::thread& thread : threads) thread.join();
    uint64_t expected_count = 0, expected_bytes = 0;
    for (uint64_t i = 0; i < kPerThread; i += 3) {
        ++expected_count;
        expected_bytes += i % 97 + 1;
    }
    Totals t = totals(pool);
    EXPECT_EQ(t.count, expected_count * kThreads);
    EXPECT_EQ(t.bytes, expected_bytes * kThreads);
    std::vector<ResourceInfo> rows;
    pool.collect(&rows);
    EXPECT_EQ(rows.size(), expected_count * kThreads);
    EXPECT_EQ(registry.pool_count(), 5u);  // "shared" and pool0..pool3, each made once
    // Serials are unique within the pool.
    std::vector<uint64_t> serials;
    for (const ResourceInfo& row : rows) serials.push_back(row.serial);
    std::sort(serials.begin(), serials.end());
    EXPECT_EQ(std::adjacent_find(serials.begin(), serials.end()), serials.end());
}

TEST(Pools, ProcessRegistryIsOne) { EXPECT_EQ(&registry(), &registry()); }
