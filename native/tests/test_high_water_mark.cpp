// HighWaterMark against a brute-force replay that copies every location's
// value each time the heap reaches its maximum (again: ties included, after
// any event, so the latest such moment is the high-water mark, as memray's).
#include <gtest/gtest.h>

#include <map>
#include <random>
#include <vector>

#include "model/high_water_mark.h"

using heapscope::HighWaterMark;
using heapscope::LocationCounters;

namespace {

struct Event {
    bool add;
    uint32_t location;
    uint64_t size;
};

struct Truth {
    std::vector<uint64_t> current_count, current_bytes;  // at the end (leaks)
    std::vector<uint64_t> peak_count, peak_bytes;        // when the heap last reached its maximum
    std::vector<uint64_t> total_count, total_bytes;
    uint64_t heap = 0, peak = 0;
};

Truth brute_force(const std::vector<Event>& events, uint32_t locations) {
    Truth t;
    for (auto* v : {&t.current_count, &t.current_bytes, &t.peak_count, &t.peak_bytes, &t.total_count, &t.total_bytes}) {
        v->assign(locations, 0);
    }
    for (const Event& e : events) {
        if (e.add) {
            t.current_count[e.location] += 1;
            t.current_bytes[e.location] += e.size;
            t.total_count[e.location] += 1;
            t.total_bytes[e.location] += e.size;
            t.heap += e.size;
        } else {
            t.current_count[e.location] -= 1;
            t.current_bytes[e.location] -= e.size;
            t.heap -= e.size;
        }
        if (t.heap >= t.peak) {
            t.peak = t.heap;
            t.peak_count = t.current_count;
            t.peak_bytes = t.current_bytes;
        }
    }
    return t;
}

// A random valid sequence: frees release blocks that are live.
std::vector<Event> random_events(std::mt19937_64& rng, uint32_t locations, size_t count) {
    std::vector<Event> events;
    std::vector<Event> live;
    for (size_t i = 0; i < count; ++i) {
        const bool add = live.empty() || rng() % 100 < 55;
        if (add) {
            // Sizes from a few classes, so that ties with the peak happen.
            const uint64_t sizes[] = {1, 8, 16, 16, 64, 1000, 4096};
            Event e{true, static_cast<uint32_t>(rng() % locations), sizes[rng() % 7]};
            if (rng() % 50 == 0) e.size = 0;
            events.push_back(e);
            live.push_back(e);
        } else {
            size_t victim = rng() % live.size();
            Event e = live[victim];
            e.add = false;
            live[victim] = live.back();
            live.pop_back();
            events.push_back(e);
        }
    }
    return events;
}

void apply(HighWaterMark* h, const Event& e) {
    if (e.add) {
        h->add(e.location, e.size);
    } else {
        h->remove(e.location, e.size);
    }
}

void expect_matches(const HighWaterMark& h, const Truth& t, uint32_t locations) {
    ASSERT_EQ(h.heap(), t.heap);
    ASSERT_EQ(h.peak_heap(), t.peak);
    for (uint32_t l = 0; l < locations; ++l) {
        if (l >= h.size()) {  // never touched
            ASSERT_EQ(t.total_count[l], 0u);
            continue;
        }
        const LocationCounters& c = h.at(l);
        ASSERT_EQ(c.peak_bytes(h.peak_epoch()), t.peak_bytes[l]) << "location " << l;
        ASSERT_EQ(c.peak_count(h.peak_epoch()), t.peak_count[l]) << "location " << l;
        ASSERT_EQ(c.current_bytes, t.current_bytes[l]);
        ASSERT_EQ(c.current_count, t.current_count[l]);
        ASSERT_EQ(c.total_bytes, t.total_bytes[l]);
        ASSERT_EQ(c.total_count, t.total_count[l]);
    }
}

}  // namespace

TEST(HighWaterMark, MatchesBruteForceOnThousandsOfRandomSequences) {
    std::mt19937_64 rng(12345);
    for (int trial = 0; trial < 5000; ++trial) {
        const uint32_t locations = 1 + static_cast<uint32_t>(rng() % 12);
        const size_t count = rng() % 300;
        std::vector<Event> events = random_events(rng, locations, count);
        HighWaterMark h;
        for (const Event& e : events) apply(&h, e);
        SCOPED_TRACE("trial " + std::to_string(trial));
        expect_matches(h, brute_force(events, locations), locations);
        if (HasFatalFailure()) return;
    }
}

TEST(HighWaterMark, EveryPrefixOfOneLongSequenceMatches) {
    // The invariant holds after every event, not only at the end.
    std::mt19937_64 rng(99);
    std::vector<Event> events = random_events(rng, 6, 2000);
    HighWaterMark h;
    for (size_t i = 0; i < events.size(); ++i) {
        apply(&h, events[i]);
        std::vector<Event> prefix(events.begin(), events.begin() + static_cast<long>(i) + 1);
        expect_matches(h, brute_force(prefix, 6), 6);
        if (HasFatalFailure()) return;
    }
}

TEST(HighWaterMark, KnownSequence) {
    HighWaterMark h;
    h.add(0, 100);     // heap 100, peak 100
    h.add(1, 50);      // heap 150, peak 150: {0: 100, 1: 50}
    h.remove(0, 100);  // heap 50
    h.add(2, 120);     // heap 170, peak 170: {0: 0, 1: 50, 2: 120}
    h.remove(2, 120);  // heap 50
    h.add(0, 100);     // heap 150: not a peak
    h.add(2, 20);      // heap 170: ties the peak, which is now this moment
    h.remove(2, 20);   // heap 150
    EXPECT_EQ(h.peak_heap(), 170u);
    EXPECT_EQ(h.heap(), 150u);
    EXPECT_EQ(h.at(0).peak_bytes(h.peak_epoch()), 100u);
    EXPECT_EQ(h.at(1).peak_bytes(h.peak_epoch()), 50u);
    EXPECT_EQ(h.at(2).peak_bytes(h.peak_epoch()), 20u);
    EXPECT_EQ(h.at(2).peak_count(h.peak_epoch()), 1u);
    EXPECT_EQ(h.at(0).current_bytes, 100u);
    EXPECT_EQ(h.at(0).total_count, 2u);
    EXPECT_EQ(h.at(0).total_bytes, 200u);
}

TEST(HighWaterMark, TheLatestOfEqualMaximaIsTheHighWaterMark) {
    // memray's rule (HighWatermarkFinder::updatePeak compares with >=, after
    // allocations and releases alike).
    HighWaterMark h;
    h.add(0, 64);      // heap 64, the first maximum: {0: 64}
    h.remove(0, 64);   // heap 0
    h.add(1, 64);      // heap 64 again: {1: 64}
    EXPECT_EQ(h.at(0).peak_count(h.peak_epoch()), 0u);
    EXPECT_EQ(h.at(1).peak_count(h.peak_epoch()), 1u);
    h.add(2, 0);       // a block of 0 bytes made at the peak belongs to it
    EXPECT_EQ(h.at(2).peak_count(h.peak_epoch()), 1u);
    h.remove(2, 0);    // and freed at the peak: gone from it
    EXPECT_EQ(h.at(2).peak_count(h.peak_epoch()), 0u);
    EXPECT_EQ(h.at(1).peak_bytes(h.peak_epoch()), 64u);
    h.shrink(1, 0);    // no change: still the peak
    h.add(3, 1);       // a new maximum
    h.remove(3, 1);
    EXPECT_EQ(h.peak_heap(), 65u);
    EXPECT_EQ(h.at(3).peak_bytes(h.peak_epoch()), 1u);
}

TEST(HighWaterMark, RestoredFromACheckpointContinuesExactly) {
    // A reader loads the state a writer had at a checkpoint, then both go on
    // with the same events: they must agree with each other and with the truth.
    std::mt19937_64 rng(5);
    for (int trial = 0; trial < 500; ++trial) {
        std::vector<Event> events = random_events(rng, 8, 400);
        const size_t split = rng() % (events.size() + 1);
        HighWaterMark writer;
        for (size_t i = 0; i < split; ++i) apply(&writer, events[i]);
        HighWaterMark reader;
        for (uint32_t l = 0; l < writer.size(); ++l) reader.mutable_at(l) = writer.at(l);
        reader.restore(writer.peak_epoch(), writer.heap(), writer.peak_heap());
        for (size_t i = split; i < events.size(); ++i) {
            apply(&writer, events[i]);
            apply(&reader, events[i]);
        }
        expect_matches(reader, brute_force(events, 8), 8);
        if (HasFatalFailure()) return;
    }
}

TEST(HighWaterMark, ShrinkKeepsTheBlockAndOverReleaseClampsAtZero) {
    HighWaterMark h;
    h.add(3, 8192);  // a mapping
    h.shrink(3, 4096);  // half of it unmapped
    EXPECT_EQ(h.at(3).current_count, 1u);
    EXPECT_EQ(h.at(3).current_bytes, 4096u);
    EXPECT_EQ(h.heap(), 4096u);
    EXPECT_EQ(h.peak_heap(), 8192u);
    EXPECT_EQ(h.at(3).peak_bytes(h.peak_epoch()), 8192u);
    h.remove(3, 4096);
    h.remove(3, 10);  // nothing left: clamped, no wrap-around
    EXPECT_EQ(h.at(3).current_count, 0u);
    EXPECT_EQ(h.at(3).current_bytes, 0u);
    EXPECT_EQ(h.heap(), 0u);
    EXPECT_EQ(h.size(), 4u);  // dense ids: 0..3
    EXPECT_EQ(h.at(0).total_count, 0u);
}
