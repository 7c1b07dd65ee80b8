// Apple-SDK shim (Linux syntax check only): <sys/_types/_size_t.h> (Darwin's size_t typedef).
#pragma once

#include <stddef.h>
