// BlockTable: the outstanding blocks of one domain. Small blocks from
// pymalloc go to a PoolIndex (found by position); everything else, and any
// small block the index refuses, to a LiveTable (found by hash). An address
// is live in at most one of the two, so lookups try the index, then the table.
#pragma once

#include "store/address_map.h"
#include "store/pool_index.h"

namespace heapscope {

class BlockTable {
  public:
    // `pooled`: the block came from a pymalloc-backed domain (mem or object).
    // Returns true and fills `*replaced` if a block was already recorded there;
    // `*ok` is false if the block could not be stored (memory ran out).
    bool insert(uintptr_t address, const BlockInfo& info, BlockInfo* replaced, bool* ok, bool pooled) {
        *ok = true;
        if (pooled) {
            switch (small_.insert(address, info, replaced)) {
                case PoolIndex::Insert::kStored: return false;
                case PoolIndex::Insert::kReplaced: return true;
                case PoolIndex::Insert::kRefused: break;
            }
        }
        // Not kept by position: make sure no older record of the address
        // lingers in the index (e.g. a block reported through domain 0 by
        // hand). Cheap: the index answers from its directory.
        BlockInfo stale;
        bool had_stale = small_.erase(address, &stale);
        bool existed = large_.insert(address, info, replaced, ok);
        if (had_stale && !existed) {
            if (replaced) *replaced = stale;
            return true;
        }
        return existed;
    }
    // As insert, and whatever was recorded at `address`, in either store, is
    // what the block replaces (a free no hook saw): a capture must report it.
    // One lookup in the index instead of an erase before the insert.
    bool replace(uintptr_t address, const BlockInfo& info, BlockInfo* replaced, bool* ok, bool pooled) {
        if (pooled) {
            switch (small_.insert(address, info, replaced)) {
                case PoolIndex::Insert::kStored:
                    *ok = true;
                    return large_.erase(address, replaced);  // keeps an address in at most one store
                case PoolIndex::Insert::kReplaced:
                    *ok = true;
                    return true;
                case PoolIndex::Insert::kRefused: break;
            }
        }
        return insert(address, info, replaced, ok, false);
    }
    // Replaces what is kept for a recorded block, where it is kept; false
    // (and nothing changes) if no block is recorded at `address`.
    bool update(uintptr_t address, const BlockInfo& info) {
        BlockInfo old;
        if (small_.find(address, &old)) return small_.insert(address, info, &old) == PoolIndex::Insert::kReplaced;
        if (!large_.find(address)) return false;
        bool ok = true;
        large_.insert(address, info, &old, &ok);  // an existing entry: no growth, so `ok` stays true
        return true;
    }
    bool erase(uintptr_t address, BlockInfo* removed) {
        return small_.erase(address, removed) || large_.erase(address, removed);
    }
    bool find(uintptr_t address, BlockInfo* out) const {
        if (small_.find(address, out)) return true;
        const BlockInfo* info = large_.find(address);
        if (info) *out = *info;
        return info != nullptr;
    }
    void clear() {
        small_.clear();
        large_.clear();
    }
    size_t size() const { return small_.size() + large_.size(); }
    size_t memory_bytes() const { return small_.memory_bytes() + large_.memory_bytes(); }
    template <typename F>
    void for_each(F&& visit) const {
        small_.for_each(visit);
        large_.for_each(visit);
    }

  private:
    PoolIndex small_;
    LiveTable large_;
};

}  // namespace heapscope
