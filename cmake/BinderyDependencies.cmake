# xxhash, OpenBLAS, PCRE2 (the tokenizer's pre-tokenizer regexes) and utf8proc (the tokenizer's
# NFC/NFD/NFKC/NFKD normalizers) from Debian's -dev packages: through pkg-config when it is
# there, otherwise by a plain search of CMAKE_PREFIX_PATH (the device machine has no pkg-config
# entries for packages unpacked into a prefix).
find_package(PkgConfig QUIET)

# bindery_dependency(<name> PKG <pkg-config module> HEADER <header> LIBRARY <library>
#                    [SUFFIXES <path suffix>...])
# Defines the INTERFACE target bindery::<name>.
function(bindery_dependency name)
  cmake_parse_arguments(ARG "" "PKG;HEADER;LIBRARY" "SUFFIXES" ${ARGN})
  string(TOUPPER ${name} var)
  add_library(bindery_dep_${name} INTERFACE)
  add_library(bindery::${name} ALIAS bindery_dep_${name})
  if(PKG_CONFIG_FOUND)
    pkg_check_modules(${var} QUIET IMPORTED_TARGET ${ARG_PKG})
  endif()
  if(TARGET PkgConfig::${var})
    target_link_libraries(bindery_dep_${name} INTERFACE PkgConfig::${var})
  else()
    find_path(${var}_INCLUDE_DIR ${ARG_HEADER} PATH_SUFFIXES ${ARG_SUFFIXES} REQUIRED)
    find_library(${var}_LIBRARY ${ARG_LIBRARY} PATH_SUFFIXES ${ARG_SUFFIXES} REQUIRED)
    target_include_directories(bindery_dep_${name} INTERFACE ${${var}_INCLUDE_DIR})
    target_link_libraries(bindery_dep_${name} INTERFACE ${${var}_LIBRARY})
  endif()
endfunction()

bindery_dependency(xxhash PKG libxxhash HEADER xxhash.h LIBRARY xxhash)

# OFF: portable gemm loops instead (src/runtime/cpu/blas.cpp), for a machine without OpenBLAS
# whose CPU path only has to be right (the GPU machine, where OpenBLAS's 36 MB library would not
# fit beside the repository in what a device run may carry).
option(BINDERY_WITH_OPENBLAS "Use OpenBLAS for CPU matrix products" ON)
if(BINDERY_WITH_OPENBLAS)
  bindery_dependency(openblas PKG openblas HEADER cblas.h LIBRARY openblas
    SUFFIXES x86_64-linux-gnu/openblas-pthread openblas)
else()
  add_library(bindery_dep_openblas INTERFACE)
  add_library(bindery::openblas ALIAS bindery_dep_openblas)
  target_compile_definitions(bindery_dep_openblas INTERFACE BINDERY_NO_OPENBLAS)
endif()

bindery_dependency(pcre2 PKG libpcre2-8 HEADER pcre2.h LIBRARY pcre2-8)
# The 8-bit library only (UTF-8 text); every use includes pcre2.h with this width.
target_compile_definitions(bindery_dep_pcre2 INTERFACE PCRE2_CODE_UNIT_WIDTH=8)

bindery_dependency(utf8proc PKG libutf8proc HEADER utf8proc.h LIBRARY utf8proc)
