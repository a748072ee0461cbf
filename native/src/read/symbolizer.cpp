// Offline symbolization with elfutils' libdwfl: one Dwfl session a shared
// object (path, load bias), opened on first use and shared by every
// generation that lists the object. DWARF gives functions, inlined frames and
// lines; the ELF symbol table names functions without it. Both are indexed
// once per object (symbols) or compilation unit (functions) and then looked
// up by binary search: on libpython3.11, 14 us an address the first time
// (indexing included), 4 us for new addresses in indexed units, 0.1 us cached.
#include "read/symbolizer.h"

#include <cxxabi.h>
#include <dwarf.h>
#include <elfutils/libdw.h>
#include <elfutils/libdwfl.h>
#include <gelf.h>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <string_view>
#include <unordered_map>
#include <utility>

namespace heapscope::read {

namespace {

constexpr const char* kUnknown = "??";

// C++ (and anything else __cxa_demangle knows) to a readable name; other
// names unchanged. Calls malloc.
std::string demangle(const char* name) {
    if (name == nullptr) return kUnknown;
    if (name[0] == '_' && name[1] == 'Z') {
        int status = 0;
        char* readable = abi::__cxa_demangle(name, nullptr, nullptr, &status);
        if (status == 0 && readable != nullptr) {
            std::string result(readable);
            std::free(readable);
            return result;
        }
        std::free(readable);
    }
    return name;
}

// An ELF symbol's name, demangled, without its symbol version
// ("__libc_start_main@@GLIBC_2.34").
std::string symbol_name(const char* symbol) {
    std::string_view name(symbol);
    name = name.substr(0, name.find('@'));
    return demangle(std::string(name).c_str());
}

std::string symbol_name_or_unknown(const char* symbol) { return symbol != nullptr ? symbol_name(symbol) : kUnknown; }

// Source paths in DWARF may be relative to the compilation directory.
std::string source_path(const char* file, const char* comp_dir) {
    if (file == nullptr) return {};
    if (file[0] == '/' || comp_dir == nullptr || comp_dir[0] == '\0') return file;
    std::string joined(comp_dir);
    if (joined.back() != '/') joined += '/';
    joined += file;
    return joined;
}

// The name of a subprogram or inlined subroutine DIE, following abstract
// origins and specifications: the demangled linkage name when there is one
// (C++ functions with external linkage come out qualified, with their
// parameters), else the plain name, else "".
std::string die_function_name(Dwarf_Die* die, bool* qualified) {
    Dwarf_Attribute attribute;
    const char* linkage = nullptr;
    if (dwarf_attr_integrate(die, DW_AT_linkage_name, &attribute) != nullptr ||
        dwarf_attr_integrate(die, DW_AT_MIPS_linkage_name, &attribute) != nullptr) {
        linkage = dwarf_formstring(&attribute);
    }
    *qualified = linkage != nullptr;
    if (linkage != nullptr) return demangle(linkage);
    const char* name = dwarf_diename(die);
    return name != nullptr ? name : "";
}

// The name of the physical frame's function. GCC gives no linkage name to
// functions with internal linkage, but the symbol table has their mangled
// name, qualified; for C functions the symbol may carry a clone suffix
// (".cold", ".part.0") that DWARF's plain name does not.
std::string physical_function_name(const std::string& dwarf_name, bool qualified, const char* symbol) {
    if (qualified || symbol == nullptr) return dwarf_name.empty() ? symbol_name_or_unknown(symbol) : dwarf_name;
    bool mangled = symbol[0] == '_' && symbol[1] == 'Z';
    if (!mangled && !dwarf_name.empty()) return dwarf_name;
    return symbol_name_or_unknown(symbol);
}

// An out-of-line function's code range, in DWARF addresses.
struct FunctionRange {
    Dwarf_Addr low;
    Dwarf_Addr high;
    Dwarf_Die die;  // the DW_TAG_subprogram: valid while its Dwfl is
};

// What one compilation unit needs for lookups, built on first use: its
// functions sorted by address, so that an address costs a binary search and
// a walk of one function's DIEs rather than of the whole unit (which
// dwarf_getscopes does: about 0.5 ms an address in CPython's ceval.c).
struct UnitIndex {
    std::vector<FunctionRange> functions;
    Dwarf_Files* files = nullptr;  // for DW_AT_call_file
    const char* comp_dir = nullptr;
};

// An ELF function symbol's runtime address range. dwfl_module_addrname scans
// the whole symbol table on every call (most of the time spent on CPython's
// libpython); this sorted copy costs one scan per object.
struct SymbolRange {
    Dwarf_Addr start;
    Dwarf_Addr end;
    const char* name;  // in the ELF string table: valid while its Dwfl is
    int rank;          // binding preference among symbols at one address
};

struct ObjectSession {
    LoadedObject object;
    Dwfl* dwfl = nullptr;  // null when the file could not be opened
    Dwfl_Module* module = nullptr;
    bool opened = false;  // tried once: a missing file stays missing
    std::unordered_map<Dwarf_Off, UnitIndex> units;  // by the unit DIE's offset
    std::vector<SymbolRange> symbols;                  // sorted by start
    // Frames per return address, memoized: the work is the same for every
    // generation that lists this object.
    std::unordered_map<uint64_t, std::vector<NativeFrame>> frames;

    ObjectSession() = default;
    ObjectSession(const ObjectSession&) = delete;
    ObjectSession& operator=(const ObjectSession&) = delete;
    ~ObjectSession() {
        if (dwfl != nullptr) dwfl_end(dwfl);
    }
};

// Separate debug files are found by build id (/usr/lib/debug/.build-id) or
// .gnu_debuglink, as gdb does. libdwfl asks debuginfod only when
// DEBUGINFOD_URLS is set in the environment.
const Dwfl_Callbacks kOfflineCallbacks = {
    .find_elf = dwfl_build_id_find_elf,
    .find_debuginfo = dwfl_standard_find_debuginfo,
    .section_address = dwfl_offline_section_address,
    .debuginfo_path = nullptr,
};

// Global names are what a caller wrote; local and weak aliases
// (__GI_ names in libc) come after.
int binding_rank(unsigned char info) {
    switch (GELF_ST_BIND(info)) {
        case STB_GLOBAL: return 0;
        case STB_WEAK: return 1;
        default: return 2;
    }
}

void index_symbols(ObjectSession& session) {
    int count = dwfl_module_getsymtab(session.module);
    std::vector<SymbolRange>& symbols = session.symbols;
    for (int i = 1; i < count; ++i) {
        GElf_Sym symbol;
        GElf_Addr address = 0;
        GElf_Word section = 0;
        Elf* elf = nullptr;
        Dwarf_Addr bias = 0;
        const char* name = dwfl_module_getsym_info(session.module, i, &symbol, &address, &section, &elf, &bias);
        int type = GELF_ST_TYPE(symbol.st_info);
        if (name == nullptr || name[0] == '\0' || section == SHN_UNDEF || section == SHN_ABS) continue;
        if (type != STT_FUNC && type != STT_GNU_IFUNC) continue;
        Dwarf_Addr end = address + symbol.st_size;
        if (symbol.st_size == 0) {
            // Sizeless (assembly, _init): up to the end of its section at
            // most, and up to the next symbol below.
            GElf_Shdr header;
            Elf_Scn* scn = elf != nullptr ? elf_getscn(elf, section) : nullptr;
            if (scn == nullptr || gelf_getshdr(scn, &header) == nullptr) continue;
            end = header.sh_addr + header.sh_size + bias;
        }
        symbols.push_back(SymbolRange{address, end, name, binding_rank(symbol.st_info)});
    }
    std::sort(symbols.begin(), symbols.end(), [](const SymbolRange& a, const SymbolRange& b) {
        return a.start != b.start ? a.start < b.start : a.rank < b.rank;
    });
    // One symbol an address: the first of each run is the preferred one.
    symbols.erase(std::unique(symbols.begin(), symbols.end(),
                              [](const SymbolRange& a, const SymbolRange& b) { return a.start == b.start; }),
                  symbols.end());
    // Ranges end where the next symbol starts, so that lookups need only
    // look at one (sized symbols rarely overlap: nested labels).
    for (size_t i = 0; i + 1 < symbols.size(); ++i) symbols[i].end = std::min(symbols[i].end, symbols[i + 1].start);
}

// The name of the function symbol holding `address`, or null.
const char* symbol_at(const ObjectSession& session, Dwarf_Addr address) {
    const std::vector<SymbolRange>& symbols = session.symbols;
    auto after = std::upper_bound(symbols.begin(), symbols.end(), address,
                                  [](Dwarf_Addr value, const SymbolRange& symbol) { return value < symbol.start; });
    if (after == symbols.begin()) return nullptr;
    const SymbolRange& symbol = *std::prev(after);
    return address < symbol.end ? symbol.name : nullptr;
}

// Opens `session.object` in its own Dwfl, placed at its load bias.
void open_session(ObjectSession& session) {
    session.opened = true;
    session.dwfl = dwfl_begin(&kOfflineCallbacks);
    if (session.dwfl == nullptr) return;
    dwfl_report_begin(session.dwfl);
    const std::string& path = session.object.path;
    session.module = dwfl_report_elf(session.dwfl, path.c_str(), path.c_str(), -1, session.object.load_bias, false);
    dwfl_report_end(session.dwfl, nullptr, nullptr);
    if (session.module == nullptr) {
        dwfl_end(session.dwfl);
        session.dwfl = nullptr;
        return;
    }
    index_symbols(session);
}

constexpr int kMaxNesting = 64;  // against malformed DWARF

// Adds the code ranges of every subprogram under `parent`. Inlined
// subroutines are not out-of-line functions and hold none.
void collect_functions(Dwarf_Die* parent, std::vector<FunctionRange>& functions, int depth) {
    if (depth > kMaxNesting) return;
    Dwarf_Die child;
    if (dwarf_child(parent, &child) != 0) return;
    do {
        switch (dwarf_tag(&child)) {
            case DW_TAG_subprogram: {
                Dwarf_Addr base = 0;
                Dwarf_Addr low = 0;
                Dwarf_Addr high = 0;
                ptrdiff_t offset = 0;
                while ((offset = dwarf_ranges(&child, offset, &base, &low, &high)) > 0) {
                    if (low < high) functions.push_back(FunctionRange{low, high, child});
                }
                collect_functions(&child, functions, depth + 1);  // nested functions
                break;
            }
            case DW_TAG_namespace:
            case DW_TAG_class_type:
            case DW_TAG_structure_type:
            case DW_TAG_union_type:
            case DW_TAG_lexical_block:
                collect_functions(&child, functions, depth + 1);
                break;
            default:
                break;
        }
    } while (dwarf_siblingof(&child, &child) == 0);
}

UnitIndex& unit_index(ObjectSession& session, Dwarf_Die* unit) {
    auto [entry, inserted] = session.units.try_emplace(dwarf_dieoffset(unit));
    UnitIndex& index = entry->second;
    if (!inserted) return index;
    collect_functions(unit, index.functions, 0);
    std::sort(index.functions.begin(), index.functions.end(), [](const FunctionRange& a, const FunctionRange& b) {
        return a.low != b.low ? a.low < b.low : a.high < b.high;
    });
    size_t file_count = 0;
    if (dwarf_getsrcfiles(unit, &index.files, &file_count) != 0) index.files = nullptr;
    Dwarf_Attribute attribute;
    index.comp_dir = dwarf_formstring(dwarf_attr(unit, DW_AT_comp_dir, &attribute));
    return index;
}

// The subprogram whose code holds `address` (a DWARF address), or null.
Dwarf_Die* function_at(UnitIndex& index, Dwarf_Addr address) {
    auto after = std::upper_bound(index.functions.begin(), index.functions.end(), address,
                                  [](Dwarf_Addr value, const FunctionRange& range) { return value < range.low; });
    // Ranges rarely overlap: look back a little for one that holds it.
    for (int step = 0; step < 16 && after != index.functions.begin(); ++step) {
        --after;
        if (address < after->high) return &after->die;
    }
    return nullptr;
}

bool has_code_ranges(Dwarf_Die* die) { return dwarf_hasattr(die, DW_AT_low_pc) || dwarf_hasattr(die, DW_AT_ranges); }

// The inlined subroutines holding `address` inside `parent`, outermost
// first. Lexical blocks without ranges are searched too: GCC may leave them
// without any while their children have some.
void inlined_chain(Dwarf_Die* parent, Dwarf_Addr address, std::vector<Dwarf_Die>& chain, int depth) {
    if (depth > kMaxNesting) return;
    Dwarf_Die child;
    if (dwarf_child(parent, &child) != 0) return;
    do {
        int tag = dwarf_tag(&child);
        if (tag != DW_TAG_inlined_subroutine && tag != DW_TAG_lexical_block) continue;
        if (dwarf_haspc(&child, address) == 1) {
            if (tag == DW_TAG_inlined_subroutine) chain.push_back(child);
            inlined_chain(&child, address, chain, depth + 1);
            return;
        }
        if (tag == DW_TAG_lexical_block && !has_code_ranges(&child)) {
            size_t before = chain.size();
            inlined_chain(&child, address, chain, depth + 1);
            if (chain.size() != before) return;
        }
    } while (dwarf_siblingof(&child, &child) == 0);
}

NativeFrame unknown_frame(const std::string& object_path) {
    return NativeFrame{kUnknown, object_path.empty() ? std::string(kUnknown) : object_path, 0};
}

// The frames of `address` (already moved back into the call instruction),
// innermost inlined frame first. Allocates; never throws on bad input.
std::vector<NativeFrame> resolve(ObjectSession& session, Dwarf_Addr address) {
    NativeFrame innermost = unknown_frame(session.object.path);
    if (session.module == nullptr) return {innermost};

    // The symbol table names the function even without DWARF.
    const char* symbol = symbol_at(session, address);
    innermost.function = symbol_name_or_unknown(symbol);
    Dwarf_Addr bias = 0;
    Dwarf_Die* unit = dwfl_module_addrdie(session.module, address, &bias);
    if (unit == nullptr) return {innermost};
    UnitIndex& index = unit_index(session, unit);

    // The innermost frame's line, from the line table.
    if (Dwfl_Line* line = dwfl_module_getsrc(session.module, address)) {
        int line_number = 0;
        const char* file = dwfl_lineinfo(line, nullptr, &line_number, nullptr, nullptr, nullptr);
        if (file != nullptr) {
            innermost.file = source_path(file, index.comp_dir);
            innermost.line = line_number;
        }
    }

    Dwarf_Addr dwarf_address = address - bias;
    Dwarf_Die* function = function_at(index, dwarf_address);
    if (function == nullptr) return {innermost};
    std::vector<Dwarf_Die> chain;
    inlined_chain(function, dwarf_address, chain, 0);

    // Innermost first: each inlined subroutine is a frame, and its caller
    // continues at the subroutine's call_file and call_line; the subprogram
    // is the physical frame.
    std::vector<NativeFrame> frames;
    frames.reserve(chain.size() + 1);
    NativeFrame current = innermost;
    for (auto inlined = chain.rbegin(); inlined != chain.rend(); ++inlined) {
        bool qualified = false;
        std::string name = die_function_name(&*inlined, &qualified);
        current.function = name.empty() ? kUnknown : std::move(name);
        frames.push_back(std::move(current));
        current = unknown_frame(session.object.path);
        Dwarf_Attribute attribute;
        Dwarf_Word call_file = 0;
        Dwarf_Word call_line = 0;
        if (index.files != nullptr &&
            dwarf_formudata(dwarf_attr(&*inlined, DW_AT_call_file, &attribute), &call_file) == 0) {
            if (const char* file = dwarf_filesrc(index.files, call_file, nullptr, nullptr)) {
                current.file = source_path(file, index.comp_dir);
            }
        }
        if (dwarf_formudata(dwarf_attr(&*inlined, DW_AT_call_line, &attribute), &call_line) == 0) {
            current.line = static_cast<int>(call_line);
        }
    }
    bool qualified = false;
    std::string name = die_function_name(function, &qualified);
    current.function = physical_function_name(name, qualified, symbol);
    frames.push_back(std::move(current));
    return frames;
}

}  // namespace

struct Symbolizer::Impl {
    // Sessions by (path, load bias): one per object however many
    // generations list it.
    std::map<std::pair<std::string, uint64_t>, std::unique_ptr<ObjectSession>> sessions;
    struct Range {
        uint64_t start;
        uint64_t end;
        ObjectSession* session;
    };
    // Per generation, the PT_LOAD ranges of its objects sorted by start.
    std::map<uint32_t, std::vector<Range>> generations;

    ObjectSession* session_for(const LoadedObject& object) {
        auto key = std::make_pair(object.path, object.load_bias);
        auto found = sessions.find(key);
        if (found != sessions.end()) return found->second.get();
        auto session = std::make_unique<ObjectSession>();
        session->object = object;
        ObjectSession* raw = session.get();
        sessions.emplace(std::move(key), std::move(session));
        return raw;
    }

    // The ranges of `generation`, or of the latest generation before it when
    // it was never given (nothing was loaded or unloaded in between).
    const std::vector<Range>* ranges_for(uint32_t generation) const {
        auto after = generations.upper_bound(generation);
        if (after == generations.begin()) return nullptr;
        return &std::prev(after)->second;
    }

    ObjectSession* find(uint64_t ip, uint32_t generation) const {
        const std::vector<Range>* ranges = ranges_for(generation);
        if (ranges == nullptr) return nullptr;
        auto after = std::upper_bound(ranges->begin(), ranges->end(), ip,
                                      [](uint64_t value, const Range& range) { return value < range.start; });
        if (after == ranges->begin()) return nullptr;
        const Range& range = *std::prev(after);
        return ip < range.end ? range.session : nullptr;
    }
};

Symbolizer::Symbolizer() : impl_(std::make_unique<Impl>()) {}
Symbolizer::~Symbolizer() = default;

void Symbolizer::set_objects(uint32_t generation, std::vector<LoadedObject> objects) {
    std::vector<Impl::Range> ranges;
    for (const LoadedObject& object : objects) {
        ObjectSession* session = impl_->session_for(object);
        for (const LoadedSegment& segment : object.segments) {
            if (segment.memsz == 0) continue;
            uint64_t start = object.load_bias + segment.vaddr;
            ranges.push_back(Impl::Range{start, start + segment.memsz, session});
        }
    }
    std::sort(ranges.begin(), ranges.end(), [](const Impl::Range& a, const Impl::Range& b) { return a.start < b.start; });
    impl_->generations[generation] = std::move(ranges);
}

std::vector<NativeFrame> Symbolizer::symbolize(uint64_t ip, uint32_t generation) {
    ObjectSession* session = impl_->find(ip, generation);
    if (session == nullptr) return {NativeFrame{kUnknown, kUnknown, 0}};
    auto cached = session->frames.find(ip);
    if (cached != session->frames.end()) return cached->second;
    if (!session->opened) open_session(*session);
    // A return address points after the call: look up the call itself.
    std::vector<NativeFrame> frames = resolve(*session, ip > 0 ? ip - 1 : ip);
    session->frames.emplace(ip, frames);
    return frames;
}

// hybrid_stack ----------------------------------------------------------------

namespace {

// True for the function that runs Python frames: _PyEval_EvalFrameDefault,
// including the parts a compiler splits off it (".cold", ".part.0").
bool is_eval_loop(std::string_view function) {
    constexpr std::string_view kLoop = "_PyEval_EvalFrameDefault";
    return function.substr(0, kLoop.size()) == kLoop && (function.size() == kLoop.size() || function[kLoop.size()] == '.');
}

// True for the thin functions that call into the loop for one frame
// (_PyEval_EvalFrame is inlined into its callers; PyEval_EvalFrameEx and
// PyEval_EvalFrame are public entry points).
bool is_eval_wrapper(std::string_view function) {
    for (std::string_view wrapper : {"_PyEval_EvalFrame", "PyEval_EvalFrameEx", "PyEval_EvalFrame"}) {
        if (function.substr(0, wrapper.size()) == wrapper &&
            (function.size() == wrapper.size() || function[wrapper.size()] == '.')) {
            return true;
        }
    }
    return false;
}

NativeFrame as_native(const PythonFrame& frame) { return NativeFrame{frame.function, frame.file, frame.line, true}; }

}  // namespace

std::vector<NativeFrame> hybrid_stack(const std::vector<PythonFrame>& python, const std::vector<NativeFrame>& native,
                                      bool outer_cut) {
    std::vector<NativeFrame> merged;
    merged.reserve(python.size() + native.size());
    size_t next_python = 0;
    // True while the frames just inside were a loop frame and its wrappers.
    bool outside_loop_frame = false;
    for (const NativeFrame& frame : native) {
        if (is_eval_loop(frame.function)) {
            if (next_python == python.size()) {
                // No Python frames left for this call (the Python stack was
                // cut at its depth limit): the native frame is all we know.
                merged.push_back(frame);
            }
            while (next_python < python.size()) {
                const PythonFrame& python_frame = python[next_python++];
                merged.push_back(as_native(python_frame));
                if (python_frame.is_entry) break;
            }
            if (outer_cut && next_python == python.size()) return merged;  // the rest ran the callers
            outside_loop_frame = true;
        } else if (is_eval_wrapper(frame.function) && outside_loop_frame) {
            // The wrapper that called this loop frame: the same Python call.
        } else {
            merged.push_back(frame);
            outside_loop_frame = false;
        }
    }
    for (; next_python < python.size(); ++next_python) merged.push_back(as_native(python[next_python]));
    return merged;
}

}  // namespace heapscope::read
