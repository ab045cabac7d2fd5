{
  "targets": [
    {
      "target_name": "wirefs_sys",
      "sources": ["native/wirefs_sys.c"],
      "cflags": ["-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "defines": ["NAPI_VERSION=8"]
    }
  ]
}
