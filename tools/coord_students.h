// gannf-coord add-students / remove-students (tools/coord_students.cpp).
#pragma once
#include "config.h"

namespace gannf {

int cmd_add_students(int argc, char** argv, const Config& cfg);
int cmd_remove_students(int argc, char** argv, const Config& cfg);

}  // namespace gannf
