// MappingIndex: live mappings (mmap) as address ranges, so that a munmap
// releases exactly the pages it covers: part of one mapping, a hole in its
// middle, or several mappings at once, as the kernel does.
//
// One class for the engine (inside the traced process) and the reader's
// replay of a capture (analysis/heap_replay.h), so that both cut mappings
// the same way. Each piece of a mapping counts as a block, as memray counts
// them: a hole cut in a mapping leaves two blocks. The payload (the
// engine's BlockInfo, the replay's location id) is copied to every piece.
//
// O(log m) per map or unmap (m: live pieces). Never calls Python; allocates
// (map nodes) only through the global allocator, which the engine calls
// with its hook guard held.
#pragma once

#include <algorithm>
#include <cstdint>
#include <iterator>
#include <map>

#include "model/block.h"

namespace heapscope {

template <typename Payload>
class MappingIndex {
  public:
    struct Piece {
        uint64_t length;
        Payload payload;
    };

    // Adds the mapping [address, address + length). Pieces it overlaps are
    // released first, reported to `released` as unmap() does: a mapping
    // made over live ones (MAP_FIXED) replaces them. A mapping of 0 bytes
    // (a failed call) adds nothing.
    template <typename OnRelease>
    void map(uint64_t address, uint64_t length, const Payload& payload, OnRelease&& released) {
        if (length == 0) return;
        unmap(address, length, released);
        pieces_[address] = Piece{length, payload};
    }

    // Releases [address, address + length) from every piece it overlaps,
    // calling released(start, bytes, how, payload) once per piece touched,
    // in address order: `start` is where the released part begins, `how`
    // says what became of the piece (Unmapped). A length of 0 releases the
    // whole piece that starts at `address`, if any. Returns the bytes released.
    template <typename OnRelease>
    uint64_t unmap(uint64_t address, uint64_t length, OnRelease&& released) {
        if (length == 0) {
            auto found = pieces_.find(address);
            if (found == pieces_.end()) return 0;
            const Piece piece = found->second;
            pieces_.erase(found);
            released(address, piece.length, Unmapped::kWhole, piece.payload);
            return piece.length;
        }
        const uint64_t end = address + length < address ? UINT64_MAX : address + length;
        auto it = pieces_.upper_bound(address);
        if (it != pieces_.begin()) {
            auto before = std::prev(it);
            if (before->first + before->second.length > address) it = before;
        }
        uint64_t total = 0;
        while (it != pieces_.end() && it->first < end) {
            const uint64_t start = it->first;
            const Piece piece = it->second;
            const uint64_t piece_end = start + piece.length;
            const uint64_t cut_from = std::max(start, address);
            const uint64_t cut_to = std::min(piece_end, end);
            it = pieces_.erase(it);
            const bool left = cut_from > start;
            const bool right = piece_end > cut_to;
            if (left) pieces_[start] = Piece{cut_from - start, piece.payload};
            // The right piece starts at `end`: the loop stops on it.
            if (right) pieces_[cut_to] = Piece{piece_end - cut_to, piece.payload};
            const Unmapped how = left && right ? Unmapped::kHole : (left || right ? Unmapped::kPart : Unmapped::kWhole);
            released(cut_from, cut_to - cut_from, how, piece.payload);
            total += cut_to - cut_from;
        }
        return total;
    }

    // The piece that starts at `address`, or null.
    const Piece* find(uint64_t address) const {
        auto found = pieces_.find(address);
        return found == pieces_.end() ? nullptr : &found->second;
    }
    // visit(start, length, payload) for every piece, in address order.
    template <typename Visit>
    void for_each(Visit&& visit) const {
        for (const auto& [start, piece] : pieces_) visit(start, piece.length, piece.payload);
    }
    size_t size() const { return pieces_.size(); }
    bool empty() const { return pieces_.empty(); }
    void clear() { pieces_.clear(); }
    // Roughly: a red-black tree node per piece.
    size_t memory_bytes() const { return pieces_.size() * (sizeof(typename Map::value_type) + 4 * sizeof(void*)); }

  private:
    using Map = std::map<uint64_t, Piece>;
    Map pieces_;  // by start address; pieces never overlap
};

}  // namespace heapscope
