#include "common/loaded_object.h"

#include <link.h>
#include <unistd.h>

#include <climits>

namespace heapscope {

namespace {
int add_object(struct dl_phdr_info* info, size_t, void* data) {
    auto* objects = static_cast<std::vector<LoadedObject>*>(data);
    LoadedObject object;
    object.path = info->dlpi_name ? info->dlpi_name : "";
    object.load_bias = info->dlpi_addr;
    for (ElfW(Half) i = 0; i < info->dlpi_phnum; ++i) {
        const ElfW(Phdr)& header = info->dlpi_phdr[i];
        if (header.p_type == PT_LOAD) object.segments.push_back(LoadedSegment{header.p_vaddr, header.p_memsz});
    }
    if (!object.segments.empty()) objects->push_back(std::move(object));
    return 0;
}
}  // namespace

std::vector<LoadedObject> current_loaded_objects() {
    std::vector<LoadedObject> objects;
    dl_iterate_phdr(add_object, &objects);
    // The main executable comes first, with an empty name.
    if (!objects.empty() && objects.front().path.empty()) {
        char exe[PATH_MAX];
        ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
        if (n > 0) objects.front().path.assign(exe, static_cast<size_t>(n));
    }
    return objects;
}

}  // namespace heapscope
