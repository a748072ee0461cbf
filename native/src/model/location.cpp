#include "model/location.h"

#include <algorithm>
#include <tuple>

namespace heapscope {

namespace {
auto as_tuple(const LocationKey& k) {
    return std::make_tuple(k.thread, k.python_node, k.native_node, k.domain, static_cast<uint8_t>(k.allocator));
}
}  // namespace

bool LocationKey::operator<(const LocationKey& other) const { return as_tuple(*this) < as_tuple(other); }

uint64_t LocationIndex::hash(const LocationKey& key) {
    uint64_t a = (static_cast<uint64_t>(key.thread) << 32) | key.python_node;
    uint64_t b = (static_cast<uint64_t>(key.native_node) << 32) | (static_cast<uint64_t>(key.domain) << 8) |
                 static_cast<uint8_t>(key.allocator);
    uint64_t x = (a ^ (b * 0xC2B2AE3D27D4EB4Full)) * 0x9E3779B97F4A7C15ull;
    return x ^ (x >> 32);
}

uint32_t LocationIndex::find(const LocationKey& key) const {
    if (slots_.empty()) return kNone;
    const size_t mask = slots_.size() - 1;
    for (size_t i = hash(key) & mask; slots_[i].id_plus_one != 0; i = (i + 1) & mask) {
        if (slots_[i].key == key) return slots_[i].id_plus_one - 1;
    }
    return kNone;
}

void LocationIndex::grow() {
    const size_t capacity = slots_.empty() ? 256 : slots_.size() * 2;
    std::vector<Slot> fresh(capacity);
    const size_t mask = capacity - 1;
    for (const Slot& slot : slots_) {
        if (slot.id_plus_one == 0) continue;
        size_t i = hash(slot.key) & mask;
        while (fresh[i].id_plus_one != 0) i = (i + 1) & mask;
        fresh[i] = slot;
    }
    slots_.swap(fresh);
}

uint32_t LocationIndex::intern_slow(const LocationKey& key, bool* created) {
    // Half full at most: probe runs stay short.
    if ((keys_.size() + 1) * 2 > slots_.size()) grow();
    const size_t mask = slots_.size() - 1;
    size_t i = hash(key) & mask;
    for (; slots_[i].id_plus_one != 0; i = (i + 1) & mask) {
        if (slots_[i].key == key) return slots_[i].id_plus_one - 1;
    }
    keys_.push_back(key);
    if (created) *created = true;
    slots_[i] = Slot{key, static_cast<uint32_t>(keys_.size())};
    return static_cast<uint32_t>(keys_.size() - 1);
}

std::vector<LocationTotal> finish_rows(std::vector<LocationTotal> rows, bool merge_threads) {
    std::erase_if(rows, [](const LocationTotal& row) { return row.count == 0; });
    if (merge_threads) {
        for (LocationTotal& row : rows) row.key.thread = 0;
        std::sort(rows.begin(), rows.end(),
                  [](const LocationTotal& a, const LocationTotal& b) { return a.key < b.key; });
        size_t out = 0;
        for (size_t i = 0; i < rows.size(); ++i) {
            if (out > 0 && rows[out - 1].key == rows[i].key) {
                rows[out - 1].count += rows[i].count;
                rows[out - 1].bytes += rows[i].bytes;
            } else {
                rows[out++] = rows[i];
            }
        }
        rows.resize(out);
    }
    std::sort(rows.begin(), rows.end(), [](const LocationTotal& a, const LocationTotal& b) {
        if (a.bytes != b.bytes) return a.bytes > b.bytes;
        return a.key < b.key;
    });
    return rows;
}

}  // namespace heapscope
