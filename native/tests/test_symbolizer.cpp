// Symbolizer against this test binary's own code (built with -g), a system
// library without debug info, missing files and unknown addresses; and
// hybrid_stack on crafted Python and native stacks.
#include "read/symbolizer.h"

#include <gtest/gtest.h>
#include <unistd.h>
#include <zstd.h>

#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "common/loaded_object.h"
#include "stack/native_unwind.h"

using heapscope::LoadedObject;
using heapscope::LoadedSegment;
using heapscope::read::hybrid_stack;
using heapscope::read::NativeFrame;
using heapscope::read::PythonFrame;
using heapscope::read::Symbolizer;

namespace symbolizer_fixture {

// The line of each call, recorded by the statement on the same line.
int inlined_capture_line = 0;
int inline_call_line = 0;

// Always inlined, even at -O0: DWARF describes it as an inlined subroutine.
__attribute__((always_inline)) inline size_t inlined_capture(uintptr_t* ips, size_t max) {
    size_t depth = heapscope::capture_native_stack(ips, max, 0); inlined_capture_line = __LINE__;
    asm volatile("" ::: "memory");
    return depth;
}

__attribute__((noinline)) size_t calls_inlined(uintptr_t* ips, size_t max) {
    size_t depth = inlined_capture(ips, max); inline_call_line = __LINE__;
    asm volatile("" ::: "memory");  // no tail call
    return depth;
}

}  // namespace symbolizer_fixture

namespace {

std::string basename_of(const std::string& path) { return std::filesystem::path(path).filename().string(); }

TEST(Symbolizer, InlinedFunctionIsItsOwnFrame) {
    uintptr_t ips[16];
    size_t depth = symbolizer_fixture::calls_inlined(ips, 16);
    ASSERT_GE(depth, 2u);
    Symbolizer symbolizer;
    symbolizer.set_objects(1, heapscope::current_loaded_objects());
    std::vector<NativeFrame> frames = symbolizer.symbolize(ips[0], 1);
    ASSERT_EQ(frames.size(), 2u);
    EXPECT_NE(frames[0].function.find("symbolizer_fixture::inlined_capture"), std::string::npos) << frames[0].function;
    EXPECT_EQ(basename_of(frames[0].file), "test_symbolizer.cpp");
    EXPECT_EQ(frames[0].line, symbolizer_fixture::inlined_capture_line);
    EXPECT_NE(frames[1].function.find("symbolizer_fixture::calls_inlined"), std::string::npos) << frames[1].function;
    EXPECT_EQ(basename_of(frames[1].file), "test_symbolizer.cpp");
    EXPECT_EQ(frames[1].line, symbolizer_fixture::inline_call_line);
}

TEST(Symbolizer, SymbolTableWithoutDebugInfo) {
    // libzstd ships without DWARF or .symtab here: only .dynsym names it.
    auto function = reinterpret_cast<uintptr_t>(&ZSTD_versionNumber);
    std::vector<LoadedObject> objects = heapscope::current_loaded_objects();
    const LoadedObject* zstd = nullptr;
    for (const LoadedObject& object : objects) {
        if (object.contains(function)) zstd = &object;
    }
    ASSERT_NE(zstd, nullptr);
    ASSERT_NE(zstd->path.find("libzstd"), std::string::npos) << zstd->path;
    Symbolizer symbolizer;
    symbolizer.set_objects(0, objects);
    // As a return address one byte into the function.
    std::vector<NativeFrame> frames = symbolizer.symbolize(function + 1, 0);
    ASSERT_EQ(frames.size(), 1u);
    EXPECT_EQ(frames[0].function, "ZSTD_versionNumber");
    if (frames[0].line != 0) GTEST_SKIP() << "libzstd has debug info on this machine: " << frames[0].file;
    EXPECT_EQ(frames[0].file, zstd->path);
    EXPECT_EQ(frames[0].line, 0);
}

TEST(Symbolizer, UnknownAddressAndGeneration) {
    Symbolizer symbolizer;
    // No generation at all yet.
    std::vector<NativeFrame> frames = symbolizer.symbolize(0x1234, 0);
    ASSERT_EQ(frames.size(), 1u);
    EXPECT_EQ(frames[0].function, "??");
    EXPECT_EQ(frames[0].file, "??");
    EXPECT_EQ(frames[0].line, 0);
    symbolizer.set_objects(3, heapscope::current_loaded_objects());
    // An address in no object.
    frames = symbolizer.symbolize(0x10, 3);
    ASSERT_EQ(frames.size(), 1u);
    EXPECT_EQ(frames[0].function, "??");
    EXPECT_EQ(frames[0].file, "??");
    // A generation before the first one given knows no objects.
    auto known = reinterpret_cast<uintptr_t>(&symbolizer_fixture::calls_inlined) + 1;
    EXPECT_EQ(symbolizer.symbolize(known, 2)[0].function, "??");
    EXPECT_NE(symbolizer.symbolize(known, 3)[0].function.find("calls_inlined"), std::string::npos);
    // A later generation never given resolves against the latest before it.
    EXPECT_NE(symbolizer.symbolize(known, 7)[0].function.find("calls_inlined"), std::string::npos);
}

TEST(Symbolizer, EachGenerationHasItsObjects) {
    std::vector<LoadedObject> objects = heapscope::current_loaded_objects();
    auto known = reinterpret_cast<uintptr_t>(&symbolizer_fixture::calls_inlined) + 1;
    Symbolizer symbolizer;
    // Generation 1: the test binary moved 1 MiB up, as after a reload at
    // another address; generation 2: where it really is.
    std::vector<LoadedObject> moved = objects;
    for (LoadedObject& object : moved) object.load_bias += 1 << 20;
    symbolizer.set_objects(1, moved);
    symbolizer.set_objects(2, objects);
    EXPECT_NE(symbolizer.symbolize(known, 2)[0].function.find("calls_inlined"), std::string::npos);
    EXPECT_NE(symbolizer.symbolize(known + (1 << 20), 1)[0].function.find("calls_inlined"), std::string::npos);
    EXPECT_EQ(symbolizer.symbolize(known + (1 << 20), 2)[0].function.find("calls_inlined"), std::string::npos);
}

TEST(Symbolizer, MissingFileIsUnknownWithItsPath) {
    LoadedObject gone{"/nonexistent/heapscope/libgone.so", 0x7f0000000000, {LoadedSegment{0, 0x10000}}};
    Symbolizer symbolizer;
    symbolizer.set_objects(0, {gone});
    for (int attempt = 0; attempt < 2; ++attempt) {  // the second one is cached
        std::vector<NativeFrame> frames = symbolizer.symbolize(0x7f0000000100, 0);
        ASSERT_EQ(frames.size(), 1u);
        EXPECT_EQ(frames[0].function, "??");
        EXPECT_EQ(frames[0].file, gone.path);
        EXPECT_EQ(frames[0].line, 0);
    }
}

TEST(Symbolizer, NotAnElfFileIsUnknown) {
    // A file that exists but is no ELF object (a text file).
    std::filesystem::path text = std::filesystem::temp_directory_path() /
                                 ("heapscope_symbolizer_not_elf_" + std::to_string(getpid()) + ".txt");
    std::FILE* file = std::fopen(text.c_str(), "w");
    ASSERT_NE(file, nullptr);
    std::fputs("not an ELF file\n", file);
    std::fclose(file);
    LoadedObject bogus{text.string(), 0x7e0000000000, {LoadedSegment{0, 0x1000}}};
    Symbolizer symbolizer;
    symbolizer.set_objects(0, {bogus});
    std::vector<NativeFrame> frames = symbolizer.symbolize(0x7e0000000010, 0);
    std::filesystem::remove(text);
    ASSERT_EQ(frames.size(), 1u);
    EXPECT_EQ(frames[0].function, "??");
    EXPECT_EQ(frames[0].file, bogus.path);
}

// hybrid_stack ----------------------------------------------------------

NativeFrame native(const char* function) { return NativeFrame{function, "native.c", 1}; }
PythonFrame python(const char* function, bool is_entry) { return PythonFrame{function, "script.py", 10, is_entry}; }

std::vector<std::string> names(const std::vector<NativeFrame>& frames) {
    std::vector<std::string> result;
    for (const NativeFrame& frame : frames) result.push_back(frame.function);
    return result;
}

TEST(HybridStack, Python311EntryFramesDelimitEachLoopCall) {
    // Innermost first: malloc called from a C function called by Python
    // function c, which c's loop ran along with b (an inlined Python call);
    // a's loop call was entered from a builtin (map) called by main's loop.
    std::vector<PythonFrame> py = {python("c", false), python("b", true), python("a", true), python("main", true)};
    std::vector<NativeFrame> nat = {native("my_alloc"),
                                    native("list_append"),
                                    native("_PyEval_EvalFrameDefault"),
                                    native("_PyEval_EvalFrame"),  // inlined wrapper: the same call
                                    native("_PyEval_Vector"),
                                    native("map_next"),
                                    native("_PyEval_EvalFrameDefault.cold"),
                                    native("_PyEval_EvalFrameDefault"),
                                    native("PyEval_EvalCode"),
                                    native("main")};
    EXPECT_EQ(names(hybrid_stack(py, nat)),
              (std::vector<std::string>{"my_alloc", "list_append", "c", "b", "_PyEval_Vector", "map_next", "a", "main",
                                        "PyEval_EvalCode", "main"}));
    // Python frames keep their file and line.
    std::vector<NativeFrame> merged = hybrid_stack(py, nat);
    EXPECT_EQ(merged[2].file, "script.py");
    EXPECT_EQ(merged[2].line, 10);
    // And say they are Python's (heapscope.pools marks them so).
    std::vector<bool> python_frames;
    for (const NativeFrame& frame : merged) python_frames.push_back(frame.python);
    EXPECT_EQ(python_frames, (std::vector<bool>{false, false, true, true, false, false, true, true, false, false}));
}

TEST(HybridStack, Python39EveryFrameIsAnEntry) {
    std::vector<PythonFrame> py = {python("inner", true), python("middle", true), python("outer", true)};
    std::vector<NativeFrame> nat = {native("PyList_New"),
                                    native("_PyEval_EvalFrameDefault"),
                                    native("function_code_fastcall"),
                                    native("_PyEval_EvalFrameDefault"),
                                    native("PyEval_EvalFrameEx"),  // wrapper of the loop call inside it
                                    native("_PyEval_EvalFrameDefault"),
                                    native("Py_RunMain")};
    EXPECT_EQ(names(hybrid_stack(py, nat)),
              (std::vector<std::string>{"PyList_New", "inner", "function_code_fastcall", "middle", "outer", "Py_RunMain"}));
}

TEST(HybridStack, LeftoverPythonFramesGoOutermost) {
    // No loop frame captured (the native stack was cut short).
    std::vector<PythonFrame> py = {python("f", true), python("g", true)};
    std::vector<NativeFrame> nat = {native("malloc_caller"), native("helper")};
    EXPECT_EQ(names(hybrid_stack(py, nat)), (std::vector<std::string>{"malloc_caller", "helper", "f", "g"}));
    // No Python frames left for a loop frame: it stays native.
    std::vector<NativeFrame> two_loops = {native("_PyEval_EvalFrameDefault"), native("call"),
                                          native("_PyEval_EvalFrameDefault"), native("call"),
                                          native("_PyEval_EvalFrameDefault")};
    EXPECT_EQ(names(hybrid_stack(py, two_loops)),
              (std::vector<std::string>{"f", "call", "g", "call", "_PyEval_EvalFrameDefault"}));
    // A wrapper that is not right outside a loop frame stays native.
    std::vector<NativeFrame> lone_wrapper = {native("custom_eval"), native("_PyEval_EvalFrame")};
    EXPECT_EQ(names(hybrid_stack({}, lone_wrapper)), (std::vector<std::string>{"custom_eval", "_PyEval_EvalFrame"}));
    EXPECT_TRUE(hybrid_stack({}, {}).empty());
}

TEST(HybridStack, NamesThatOnlyStartLikeTheLoopAreNative) {
    std::vector<PythonFrame> py = {python("f", true)};
    std::vector<NativeFrame> nat = {native("_PyEval_EvalFrameDefaultX"), native("_PyEval_EvalFrameDefault")};
    EXPECT_EQ(names(hybrid_stack(py, nat)), (std::vector<std::string>{"_PyEval_EvalFrameDefaultX", "f"}));
}

}  // namespace
