"""A real RTSP server (GStreamer's gst-rtsp-server) for the camera tests; run with the system python3.

``/usr/bin/python3 gst_rtsp_server.py --port N [--path /cam] [--fps 15] [--codec jpeg|gst]
[--user U --password P]`` serves a live test pattern at ``rtsp://127.0.0.1:N/cam`` and prints
``READY`` when it listens. ``--codec jpeg`` is RTP/JPEG (what FFmpeg decodes); ``--codec gst``
is GStreamer's own RTP payload (``X-GST``), which FFmpeg cannot decode. With ``--user`` the
stream needs those Basic credentials. Debian packages: gir1.2-gst-rtsp-server-1.0, python3-gi,
gstreamer1.0-plugins-base, gstreamer1.0-plugins-good. Stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/cam")
    parser.add_argument("--fps", type=int, default=15)
    parser.add_argument("--size", default="96x96")
    parser.add_argument("--codec", choices=("jpeg", "gst"), default="jpeg")
    parser.add_argument("--user")
    parser.add_argument("--password")
    args = parser.parse_args()
    Gst.init(None)
    width, height = args.size.split("x")
    caps = f"video/x-raw,format=I420,width={width},height={height},framerate={args.fps}/1"
    pay = "jpegenc ! rtpjpegpay name=pay0 pt=26" if args.codec == "jpeg" else "rtpgstpay name=pay0 pt=96"
    launch = f"( videotestsrc is-live=true pattern=ball ! {caps} ! {pay} )"
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch)
    factory.set_shared(True)
    if args.user:
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "user")
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(args.user, args.password or ""), token)
        server.set_auth(auth)
        permissions = GstRtspServer.RTSPPermissions()
        permissions.add_permission_for_role("user", "media.factory.access", True)
        permissions.add_permission_for_role("user", "media.factory.construct", True)
        factory.set_permissions(permissions)
    server.get_mount_points().add_factory(args.path, factory)
    if server.attach(None) == 0:
        print(f"cannot listen on port {args.port}", file=sys.stderr, flush=True)
        return 1
    loop = GLib.MainLoop()
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, loop.quit)
    print("READY", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
