{
  "targets": [
    {
      "target_name": "nvgrace_native",
      "sources": [
        "binding/main.c",
        "binding/util.c",
        "binding/socket.c",
        "binding/memory.c",
        "binding/fd.c",
        "binding/poll.c",
        "binding/notify.c",
        "binding/numa.c",
        "binding/vfio.c",
        "binding/pidfd.c",
        "binding/guard.c"
      ],
      "cflags": ["-std=gnu11", "-Wall", "-Wextra", "-O2"],
      "defines": ["NAPI_VERSION=8", "_GNU_SOURCE"]
    }
  ]
}
