// A shared object mapped into the traced process, as a capture records it so
// that native return addresses can be symbolized later, offline.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace heapscope {

struct LoadedSegment {
    uint64_t vaddr;  // p_vaddr of a PT_LOAD segment
    uint64_t memsz;  // p_memsz
};

struct LoadedObject {
    std::string path;    // as dl_iterate_phdr reports it ("" for the main executable: see below)
    uint64_t load_bias;  // dlpi_addr: runtime address = load_bias + vaddr
    std::vector<LoadedSegment> segments;
    // True if `ip` falls inside one of the object's PT_LOAD segments.
    bool contains(uint64_t ip) const {
        for (const LoadedSegment& s : segments) {
            if (ip >= load_bias + s.vaddr && ip < load_bias + s.vaddr + s.memsz) return true;
        }
        return false;
    }
};

// The objects currently loaded, from dl_iterate_phdr. The main executable's
// empty name is replaced by /proc/self/exe's target. May allocate; takes the
// loader's lock (do not call while holding a lock a dlopen-ing thread may want).
std::vector<LoadedObject> current_loaded_objects();

}  // namespace heapscope
