"""A live RTSP camera stand-in for the stream tests: GStreamer's RTSP server (Debian's gir1.2-gst-rtsp-server-1.0,
run by Debian's own /usr/bin/python3, which has its GObject bindings) serving a live H.264 test pattern.

    /usr/bin/python3 tests/rtsp_server.py PORT     serves rtsp://127.0.0.1:PORT/live until killed

The pattern is a ball moving over a test card at 25 fps, 320x240, encoded with x264 for low latency (one key
frame a second), timestamped live: what an IP camera sends. Prints ``ready`` once it listens.
"""

import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

PIPELINE = (
    "( videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,framerate=25/1 "
    "! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=25 ! rtph264pay name=pay0 pt=96 )"
)


def main() -> None:
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(sys.argv[1])
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(PIPELINE)
    factory.set_shared(True)
    server.get_mount_points().add_factory("/live", factory)
    if server.attach(None) == 0:
        sys.exit(f"cannot listen on 127.0.0.1:{sys.argv[1]}")
    print("ready", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
