# xxhash, OpenBLAS, PCRE2 (the tokenizer's pre-tokenizer regexes) and utf8proc (the tokenizer's
# NFC/NFD/NFKC/NFKD normalizers) from Debian's -dev packages: through pkg-config when it is
# there, otherwise by a plain search of CMAKE_PREFIX_PATH (the device machine has no pkg-config
# entries for packages unpacked into a prefix).
find_package(PkgConfig QUIET)
if(PKG_CONFIG_FOUND)
  pkg_check_modules(XXHASH QUIET IMPORTED_TARGET libxxhash)
  pkg_check_modules(OPENBLAS QUIET IMPORTED_TARGET openblas)
  pkg_check_modules(PCRE2 QUIET IMPORTED_TARGET libpcre2-8)
  pkg_check_modules(UTF8PROC QUIET IMPORTED_TARGET libutf8proc)
endif()

add_library(bindery_dep_xxhash INTERFACE)
add_library(bindery::xxhash ALIAS bindery_dep_xxhash)
if(TARGET PkgConfig::XXHASH)
  target_link_libraries(bindery_dep_xxhash INTERFACE PkgConfig::XXHASH)
else()
  find_path(XXHASH_INCLUDE_DIR xxhash.h REQUIRED)
  find_library(XXHASH_LIBRARY xxhash REQUIRED)
  target_include_directories(bindery_dep_xxhash INTERFACE ${XXHASH_INCLUDE_DIR})
  target_link_libraries(bindery_dep_xxhash INTERFACE ${XXHASH_LIBRARY})
endif()

add_library(bindery_dep_openblas INTERFACE)
add_library(bindery::openblas ALIAS bindery_dep_openblas)
# OFF: portable gemm loops instead (src/runtime/cpu/blas.cpp), for a machine without OpenBLAS
# whose CPU path only has to be right (the GPU machine, where OpenBLAS's 36 MB library would not
# fit beside the repository in what a device run may carry).
option(BINDERY_WITH_OPENBLAS "Use OpenBLAS for CPU matrix products" ON)
if(NOT BINDERY_WITH_OPENBLAS)
  target_compile_definitions(bindery_dep_openblas INTERFACE BINDERY_NO_OPENBLAS)
elseif(TARGET PkgConfig::OPENBLAS)
  target_link_libraries(bindery_dep_openblas INTERFACE PkgConfig::OPENBLAS)
else()
  find_path(OPENBLAS_INCLUDE_DIR cblas.h PATH_SUFFIXES x86_64-linux-gnu/openblas-pthread openblas REQUIRED)
  find_library(OPENBLAS_LIBRARY openblas PATH_SUFFIXES x86_64-linux-gnu/openblas-pthread REQUIRED)
  target_include_directories(bindery_dep_openblas INTERFACE ${OPENBLAS_INCLUDE_DIR})
  target_link_libraries(bindery_dep_openblas INTERFACE ${OPENBLAS_LIBRARY})
endif()

add_library(bindery_dep_pcre2 INTERFACE)
add_library(bindery::pcre2 ALIAS bindery_dep_pcre2)
# The 8-bit library only (UTF-8 text); every use includes pcre2.h with this width.
target_compile_definitions(bindery_dep_pcre2 INTERFACE PCRE2_CODE_UNIT_WIDTH=8)
if(TARGET PkgConfig::PCRE2)
  target_link_libraries(bindery_dep_pcre2 INTERFACE PkgConfig::PCRE2)
else()
  find_path(PCRE2_INCLUDE_DIR pcre2.h REQUIRED)
  find_library(PCRE2_LIBRARY pcre2-8 REQUIRED)
  target_include_directories(bindery_dep_pcre2 INTERFACE ${PCRE2_INCLUDE_DIR})
  target_link_libraries(bindery_dep_pcre2 INTERFACE ${PCRE2_LIBRARY})
endif()

add_library(bindery_dep_utf8proc INTERFACE)
add_library(bindery::utf8proc ALIAS bindery_dep_utf8proc)
if(TARGET PkgConfig::UTF8PROC)
  target_link_libraries(bindery_dep_utf8proc INTERFACE PkgConfig::UTF8PROC)
else()
  find_path(UTF8PROC_INCLUDE_DIR utf8proc.h REQUIRED)
  find_library(UTF8PROC_LIBRARY utf8proc REQUIRED)
  target_include_directories(bindery_dep_utf8proc INTERFACE ${UTF8PROC_INCLUDE_DIR})
  target_link_libraries(bindery_dep_utf8proc INTERFACE ${UTF8PROC_LIBRARY})
endif()
