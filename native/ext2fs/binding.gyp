{
  "targets": [
    {
      "target_name": "wirefs_ext2fs",
      "sources": ["wirefs_ext2fs.c"],
      "cflags": ["-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "libraries": ["-lext2fs", "-lcom_err"],
      "defines": ["NAPI_VERSION=8"]
    }
  ]
}
