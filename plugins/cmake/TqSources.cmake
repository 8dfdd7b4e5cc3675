# tq_collect_sources(<out-var> <folder> <glob>...): the sorted source files of a folder, recursively.
# Every folder of plugins/ is collected by globbing, so adding a file needs no CMake edit; re-run CMake
# (scripts/setup.sh or `pip install -e .` do) after adding one. A missing folder gives an empty list.
function(tq_collect_sources out_var folder)
  set(_files)
  if(IS_DIRECTORY "${folder}")
    set(_patterns)
    foreach(_glob IN LISTS ARGN)
      list(APPEND _patterns "${folder}/${_glob}")
    endforeach()
    file(GLOB_RECURSE _files CONFIGURE_DEPENDS ${_patterns})
    list(SORT _files)
  endif()
  set(${out_var} "${_files}" PARENT_SCOPE)
endfunction()
