# grace: protobuf-c code generated from .proto files at build time.
#
#   include(cmake/proto.cmake)
#   grace_proto_library(grace_example_proto
#     ${CMAKE_SOURCE_DIR}/examples/proto/helloworld.proto)
#   target_link_libraries(greeter-server PRIVATE grace_example_proto)
#
# grace_proto_library(<target> <proto>...) runs protoc-c (Debian package
# protobuf-c-compiler) on each .proto into <build>/<target>/, compiles the
# generated sources into the static library <target>, links it against
# libprotobuf-c (libprotobuf-c-dev) and exports the generated headers:
# a target linking <target> can #include "helloworld.pb-c.h".
#
# grace_proto_generate(<sources_var> <out_dir> <proto>...) only generates:
# it sets <sources_var> to the generated .pb-c.c and .pb-c.h files for a
# target of the caller's to compile (libgrace compiles its private health
# messages, src/grpc/grace_health.proto, into its own objects this way).
#
# Each .proto is compiled with its own directory as the import path, so a
# proto may import another one from the same directory by its file name.
#
# The generated code is not ours, so, as for llhttp, our warning set does not
# apply to it: protoc-c 1.4 output passes GRACE_WARNINGS under gcc and clang
# except -Wcast-qual (its *__INIT macros cast protobuf_c_empty_string, a
# const char[], to char *).  The same macros expanded in our own code trip
# -Wcast-qual too, even from a system include directory; grace code must
# therefore initialize messages with the generated <message>__init(&msg)
# functions rather than the <MESSAGE>__INIT macros.

include_guard(GLOBAL)

function(grace_proto_generate sources_var out_dir)
  if(ARGC LESS 3)
    message(FATAL_ERROR "grace_proto_generate(${sources_var}): no .proto given")
  endif()

  find_program(GRACE_PROTOC_C protoc-c)
  if(NOT GRACE_PROTOC_C)
    message(FATAL_ERROR "protoc-c not found (apt-get install protobuf-c-compiler)")
  endif()

  file(MAKE_DIRECTORY ${out_dir})
  set(sources "")
  foreach(proto ${ARGN})
    get_filename_component(abs ${proto} ABSOLUTE)
    get_filename_component(dir ${abs} DIRECTORY)
    get_filename_component(name ${abs} NAME_WE)
    set(c_file ${out_dir}/${name}.pb-c.c)
    set(h_file ${out_dir}/${name}.pb-c.h)
    add_custom_command(
      OUTPUT ${c_file} ${h_file}
      COMMAND ${GRACE_PROTOC_C} --proto_path=${dir} --c_out=${out_dir} ${abs}
      DEPENDS ${abs} ${GRACE_PROTOC_C}
      COMMENT "protoc-c ${name}.proto"
      VERBATIM)
    list(APPEND sources ${c_file} ${h_file})
  endforeach()
  set(${sources_var} ${sources} PARENT_SCOPE)
endfunction()

function(grace_proto_library target)
  if(ARGC LESS 2)
    message(FATAL_ERROR "grace_proto_library(${target}): no .proto given")
  endif()
  find_package(PkgConfig REQUIRED)
  if(NOT TARGET PkgConfig::GRACE_PROTOBUF_C)
    pkg_check_modules(GRACE_PROTOBUF_C REQUIRED IMPORTED_TARGET GLOBAL libprotobuf-c)
  endif()

  set(out_dir ${CMAKE_CURRENT_BINARY_DIR}/${target})
  grace_proto_generate(sources ${out_dir} ${ARGN})

  add_library(${target} STATIC ${sources})
  # SYSTEM keeps warnings inside the generated headers out of our builds
  # (the *__INIT macros excepted, see above).
  target_include_directories(${target} SYSTEM PUBLIC ${out_dir})
  target_link_libraries(${target} PUBLIC PkgConfig::GRACE_PROTOBUF_C)
  target_compile_options(${target} PRIVATE -w)
  set_target_properties(${target} PROPERTIES
    C_STANDARD 11
    C_STANDARD_REQUIRED ON
    POSITION_INDEPENDENT_CODE ON)
endfunction()
