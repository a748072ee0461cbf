// One record as a line of text, for `heapscope parse` (memray's
// dump_all_records): its type, then its fields as name=value, as the file
// holds them (ids, addresses in hex, allocators by name). Strings are
// quoted with C escapes.
#pragma once

#include <string>

#include "format/chunk_io.h"
#include "format/records.h"

namespace heapscope::format {

std::string record_text(const Record& record);
// The file header as a line: HEADER version=... file_format=... native_traces=... trace_python_allocators=...
std::string header_text(const FileHeader& header);

}  // namespace heapscope::format
