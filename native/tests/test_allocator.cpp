// The allocator table: the one place file values meet memray's public values.
#include <gtest/gtest.h>

#include <set>
#include <string>

#include "model/allocator.h"

using namespace heapscope;

namespace {

TEST(AllocatorTable, ListsEveryAllocatorOnceWithDistinctPublicValuesAndNames) {
    std::set<int> file_values, public_values;
    std::set<std::string> names;
    for (const AllocatorInfo& entry : allocator_table()) {
        EXPECT_TRUE(file_values.insert(static_cast<int>(entry.allocator)).second)
            << "file value " << static_cast<int>(entry.allocator) << " listed twice";
        EXPECT_TRUE(public_values.insert(entry.public_value).second)
            << "public value " << static_cast<int>(entry.public_value) << " listed twice";
        EXPECT_TRUE(names.insert(entry.name).second) << entry.name << " listed twice";
        EXPECT_GE(entry.public_value, 1);
    }
    // Every enum value, 1 to kMaxAllocator, and nothing else.
    EXPECT_EQ(file_values.size(), kMaxAllocator);
    EXPECT_EQ(*file_values.begin(), 1);
    EXPECT_EQ(*file_values.rbegin(), kMaxAllocator);
    for (int value = 1; value <= kMaxAllocator; ++value) {
        const AllocatorInfo* info = allocator_info(static_cast<Allocator>(value));
        ASSERT_NE(info, nullptr);
        EXPECT_EQ(static_cast<int>(info->allocator), value);
        EXPECT_STREQ(allocator_name(info->allocator), info->name);
        EXPECT_EQ(public_allocator_value(info->allocator), info->public_value);
        EXPECT_EQ(is_deallocator(info->allocator), info->deallocator);
    }
}

TEST(AllocatorTable, ValuesOutOfRangeAreUnknown) {
    for (int value : {0, kMaxAllocator + 1, 255}) {
        EXPECT_EQ(allocator_info(static_cast<Allocator>(value)), nullptr);
        EXPECT_STREQ(allocator_name(static_cast<Allocator>(value)), "UNKNOWN");
        EXPECT_EQ(public_allocator_value(static_cast<Allocator>(value)), 0);
        EXPECT_FALSE(is_deallocator(static_cast<Allocator>(value)));
    }
}

TEST(AllocatorTable, DeallocatorsAreTheFourThatRelease) {
    std::set<Allocator> releasing;
    for (const AllocatorInfo& entry : allocator_table()) {
        if (entry.deallocator) releasing.insert(entry.allocator);
    }
    EXPECT_EQ(releasing, (std::set<Allocator>{Allocator::kFree, Allocator::kMunmap, Allocator::kPymallocFree,
                                              Allocator::kUntrack}));
}

}  // namespace
