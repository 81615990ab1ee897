{
  "targets": [
    {
      "target_name": "nvgrace_native",
      "sources": ["binding/native.c"],
      "cflags": ["-std=gnu11", "-Wall", "-Wextra", "-O2"],
      "defines": ["NAPI_VERSION=8", "_GNU_SOURCE"]
    }
  ]
}
