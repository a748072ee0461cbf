#include "hooks/elf_patcher.h"

#include <dlfcn.h>
#include <elf.h>
#include <link.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <vector>

namespace heapscope::elf {

namespace {

// A GOT slot to write: `value` into `*slot`.
struct SlotWrite {
    void** slot;
    void* value;
    bool relro;  // the slot's page is read-only (RELRO): closed again after the write
    void* previous = nullptr;
    bool writable = false;  // in a writable segment, outside RELRO: written without mprotect
    bool done = false;
    // The write that puts the previous value back.
    SlotWrite undone() const { return SlotWrite{slot, previous, relro, value, writable}; }
};

// A slot patched: its write (value: our replacement, previous: what it held).
struct PatchedSlot {
    SlotWrite patch;
    uintptr_t object_base;  // the object the slot belongs to
};

std::mutex g_mutex;
std::vector<PatchedSlot> g_patched;  // guarded by g_mutex

struct PatchRun {
    const SymbolHook* hooks;
    size_t count;
    uintptr_t own_base;  // load address of heapscope's own module, skipped
    size_t patched;
    uintptr_t object_base = 0;  // the object being patched
    uintptr_t relro_start = 0, relro_end = 0;
    std::vector<std::pair<uintptr_t, uintptr_t>> writable;  // the object's writable segments
    std::vector<SlotWrite> writes;  // the object's slots to patch, written together
    // Bit h: hooks[h].name starts with this byte (h < 64). Most relocations
    // name no hooked symbol: one look here instead of a strcmp per hook.
    uint64_t hooks_by_first_byte[256] = {};
};

uintptr_t page_of(void* address) {
    static const long page = sysconf(_SC_PAGESIZE);
    return reinterpret_cast<uintptr_t>(address) & ~static_cast<uintptr_t>(page - 1);
}

// Writes the slots in `writes`, in their order within each page, setting
// `done` on each one written. Under full RELRO the GOT is read-only after
// relocation: each page is opened once for all its slots and closed again,
// since every mprotect of one page splits the mapping and its undoing merges
// it (per slot, that was a fifth of a capture's start). A page whose slots
// all lie in a writable segment (no RELRO) is written as it is.
void write_slots(std::vector<SlotWrite>* writes) {
    static const auto page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    std::stable_sort(writes->begin(), writes->end(),
                     [](const SlotWrite& a, const SlotWrite& b) { return page_of(a.slot) < page_of(b.slot); });
    for (size_t first = 0; first < writes->size();) {
        const uintptr_t at = page_of((*writes)[first].slot);
        size_t end = first;
        bool relro = false, writable = true;
        for (; end < writes->size() && page_of((*writes)[end].slot) == at; ++end) {
            relro |= (*writes)[end].relro;
            writable &= (*writes)[end].writable;
        }
        if (writable || mprotect(reinterpret_cast<void*>(at), page, PROT_READ | PROT_WRITE) == 0) {
            for (size_t i = first; i < end; ++i) {
                *(*writes)[i].slot = (*writes)[i].value;
                (*writes)[i].done = true;
            }
            if (relro) mprotect(reinterpret_cast<void*>(at), page, PROT_READ);
        }
        first = end;
    }
}

void patch_slot(void** slot, void* replacement, PatchRun* run) {
    if (*slot == replacement) return;  // already ours
    auto address = reinterpret_cast<uintptr_t>(slot);
    // Read-only after relocation: the pages ld.so protects, from the page of
    // RELRO's start to the page below its end (the page holding the end
    // stays writable, with whatever else is on it).
    const uintptr_t page = page_of(slot);
    const bool relro = page >= page_of(reinterpret_cast<void*>(run->relro_start)) &&
                       page < page_of(reinterpret_cast<void*>(run->relro_end));
    // A whole slot in a segment the loader keeps writable (lazy binding writes there).
    const bool writable = !relro && std::any_of(run->writable.begin(), run->writable.end(), [&](const auto& segment) {
        return address >= segment.first && address + sizeof(void*) <= segment.second;
    });
    run->writes.push_back(SlotWrite{slot, replacement, relro, *slot, writable});
}

bool is_dynamic_loader(const char* path) {
    const char* slash = std::strrchr(path, '/');
    const char* base = slash ? slash + 1 : path;
    return std::strncmp(base, "ld-linux", 8) == 0 || std::strncmp(base, "ld.so", 5) == 0 ||
           std::strncmp(base, "ld-musl", 7) == 0 || std::strncmp(base, "linux-vdso", 10) == 0 ||
           std::strncmp(base, "linux-gate", 10) == 0;
}

template <typename Rel>
void patch_relocations(uintptr_t base, const Rel* relocs, size_t bytes, const ElfW(Sym) * symbols,
                       const char* strings, PatchRun* run) {
    for (size_t i = 0; i < bytes / sizeof(Rel); ++i) {
        const Rel& rel = relocs[i];
        auto type = ELF64_R_TYPE(rel.r_info);
#if defined(__x86_64__)
        if (type != R_X86_64_JUMP_SLOT && type != R_X86_64_GLOB_DAT) continue;
#elif defined(__aarch64__)
        if (type != R_AARCH64_JUMP_SLOT && type != R_AARCH64_GLOB_DAT) continue;
#endif
        const char* name = strings + symbols[ELF64_R_SYM(rel.r_info)].st_name;
        const uint64_t candidates = run->hooks_by_first_byte[static_cast<unsigned char>(name[0])];
        if (candidates == 0 && run->count <= 64) continue;
        for (size_t h = 0; h < run->count; ++h) {
            if (h < 64 && !(candidates >> h & 1)) continue;
            if (run->hooks[h].only_in && run->hooks[h].only_in != base) continue;
            if (std::strcmp(name, run->hooks[h].name) == 0) {
                patch_slot(reinterpret_cast<void**>(base + rel.r_offset), run->hooks[h].replacement, run);
                break;
            }
        }
    }
}

// The slots of one object that name a hooked symbol, into run->writes.
void collect_object_slots(struct dl_phdr_info* info, PatchRun* run) {
    run->object_base = info->dlpi_addr;
    run->relro_start = run->relro_end = 0;
    run->writable.clear();
    for (int p = 0; p < info->dlpi_phnum; ++p) {
        const ElfW(Phdr)& header = info->dlpi_phdr[p];
        if (header.p_type == PT_GNU_RELRO) {
            run->relro_start = info->dlpi_addr + header.p_vaddr;
            run->relro_end = run->relro_start + header.p_memsz;
        } else if (header.p_type == PT_LOAD && (header.p_flags & PF_W)) {
            run->writable.emplace_back(info->dlpi_addr + header.p_vaddr, info->dlpi_addr + header.p_vaddr + header.p_memsz);
        }
    }
    for (int p = 0; p < info->dlpi_phnum; ++p) {
        if (info->dlpi_phdr[p].p_type != PT_DYNAMIC) continue;
        auto* dyn = reinterpret_cast<const ElfW(Dyn)*>(info->dlpi_addr + info->dlpi_phdr[p].p_vaddr);
        const ElfW(Sym)* symbols = nullptr;
        const char* strings = nullptr;
        const ElfW(Rela)* rela = nullptr;
        size_t rela_bytes = 0;
        const void* jmprel = nullptr;
        size_t jmprel_bytes = 0;
        bool jmprel_is_rela = true;
        for (; dyn->d_tag != DT_NULL; ++dyn) {
            switch (dyn->d_tag) {
                case DT_SYMTAB: symbols = reinterpret_cast<const ElfW(Sym)*>(dyn->d_un.d_ptr); break;
                case DT_STRTAB: strings = reinterpret_cast<const char*>(dyn->d_un.d_ptr); break;
                case DT_RELA: rela = reinterpret_cast<const ElfW(Rela)*>(dyn->d_un.d_ptr); break;
                case DT_RELASZ: rela_bytes = dyn->d_un.d_val; break;
                case DT_JMPREL: jmprel = reinterpret_cast<const void*>(dyn->d_un.d_ptr); break;
                case DT_PLTRELSZ: jmprel_bytes = dyn->d_un.d_val; break;
                case DT_PLTREL: jmprel_is_rela = dyn->d_un.d_val == DT_RELA; break;
                default: break;
            }
        }
        if (!symbols || !strings) return;
        // The loader has already relocated these d_ptr values to absolute
        // addresses on glibc (but not in the vdso, skipped above).
        if (rela) patch_relocations(info->dlpi_addr, rela, rela_bytes, symbols, strings, run);
        if (jmprel && jmprel_is_rela) {
            patch_relocations(info->dlpi_addr, static_cast<const ElfW(Rela)*>(jmprel), jmprel_bytes, symbols,
                              strings, run);
        }
    }
}

// Patches one object (under the loader's lock, so it cannot be unloaded meanwhile).
int patch_object(struct dl_phdr_info* info, size_t, void* data) {
    auto* run = static_cast<PatchRun*>(data);
    const char* name = info->dlpi_name ? info->dlpi_name : "";
    if (info->dlpi_addr == run->own_base || is_dynamic_loader(name)) return 0;
    run->writes.clear();
    collect_object_slots(info, run);
    write_slots(&run->writes);
    for (const SlotWrite& write : run->writes) {
        if (!write.done) continue;
        g_patched.push_back(PatchedSlot{write, run->object_base});
        ++run->patched;
    }
    return 0;
}

uintptr_t own_load_address() {
    Dl_info info;
    if (dladdr(reinterpret_cast<void*>(&own_load_address), &info) == 0) return 0;
    return reinterpret_cast<uintptr_t>(info.dli_fbase);
}

}  // namespace

size_t patch_loaded_objects(const SymbolHook* hooks, size_t count) {
    std::lock_guard<std::mutex> lock(g_mutex);
    // dladdr gives the base of the mapping; dl_phdr_info gives the load bias.
    // For position-independent objects (all shared objects) they are equal.
    PatchRun run{hooks, count, own_load_address(), 0};
    for (size_t h = 0; h < count && h < 64; ++h) {
        run.hooks_by_first_byte[static_cast<unsigned char>(hooks[h].name[0])] |= uint64_t{1} << h;
    }
    dl_iterate_phdr(patch_object, &run);
    return run.patched;
}

int collect_loaded_base(struct dl_phdr_info* info, size_t, void* data) {
    static_cast<std::vector<uintptr_t>*>(data)->push_back(info->dlpi_addr);
    return 0;
}

void unpatch_all() {
    std::lock_guard<std::mutex> lock(g_mutex);
    std::vector<uintptr_t> loaded;
    dl_iterate_phdr(collect_loaded_base, &loaded);
    // Newest first, so a slot patched twice ends with its first value: each
    // restore applies to the value the newer ones leave. A slot whose object
    // was unloaded (its memory may now be someone else's), or that no longer
    // holds our pointer, is left alone.
    std::vector<SlotWrite> writes;
    for (auto it = g_patched.rbegin(); it != g_patched.rend(); ++it) {
        bool still_loaded = std::find(loaded.begin(), loaded.end(), it->object_base) != loaded.end();
        if (!still_loaded) continue;
        const SlotWrite& patch = it->patch;
        auto pending = std::find_if(writes.begin(), writes.end(), [&](const SlotWrite& w) { return w.slot == patch.slot; });
        if ((pending != writes.end() ? pending->value : *patch.slot) != patch.value) continue;
        if (pending != writes.end()) {
            pending->value = patch.previous;
        } else {
            writes.push_back(patch.undone());
        }
    }
    write_slots(&writes);
    g_patched.clear();
}

}  // namespace heapscope::elf
