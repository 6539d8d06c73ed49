"""A raw serial port (USB-CDC or UART) through termios, with errors a user can act on.

No pyserial: termios does all a byte pipe needs, and opening exclusively (TIOCEXCL) stops a
second lungedge, or a stray `screen`, from silently sharing the stethoscope.
"""

from __future__ import annotations

import errno
import fcntl
import grp
import os
import select
import termios
import tty

BAUD_RATES = {
    9600: termios.B9600, 19200: termios.B19200, 38400: termios.B38400, 57600: termios.B57600,
    115200: termios.B115200, 230400: termios.B230400, 460800: termios.B460800,
    921600: termios.B921600, 1000000: termios.B1000000, 2000000: termios.B2000000,
}


class PortError(RuntimeError):
    """The port cannot be opened or used; the message says why and what to do."""


class LinkLost(OSError):
    """The device went away while open (unplugged, reset)."""


def describe_open_error(path: str, exc: OSError) -> str:
    if exc.errno == errno.ENOENT:
        return (f"serial port {path} does not exist: is the stethoscope plugged in? "
                "(`ls /dev/serial/by-id/` lists connected devices)")
    if exc.errno == errno.EACCES:
        try:
            group = grp.getgrgid(os.stat(path).st_gid).gr_name
        except (OSError, KeyError):
            group = "dialout"
        return (f"no permission to open {path}: it belongs to group '{group}'; add the user "
                f"running lungedge to it (`sudo usermod -aG {group} USER`, then log in again)")
    if exc.errno == errno.EBUSY:
        return (f"serial port {path} is busy: another program has it open "
                f"(`fuser -v {path}` shows which)")
    return f"cannot open serial port {path}: {exc.strerror or exc}"


class SerialPort:
    def __init__(self, path: str, baud: int = 115200) -> None:
        if baud not in BAUD_RATES:
            raise PortError(f"baud rate {baud} is not supported; use one of "
                            f"{sorted(BAUD_RATES)}")
        self.path = path
        self.baud = baud
        self.fd: int | None = None

    def open(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        except OSError as exc:
            raise PortError(describe_open_error(self.path, exc)) from None
        try:
            if not os.isatty(fd):
                raise PortError(f"{self.path} is not a serial port (not a tty)")
            try:
                fcntl.ioctl(fd, termios.TIOCEXCL)
            except OSError as exc:
                raise PortError(describe_open_error(self.path, exc)) from None
            tty.setraw(fd)
            attrs = termios.tcgetattr(fd)
            attrs[4] = attrs[5] = BAUD_RATES[self.baud]  # ispeed, ospeed
            attrs[2] |= termios.CLOCAL | termios.CREAD
            termios.tcsetattr(fd, termios.TCSANOW, attrs)
            termios.tcflush(fd, termios.TCIFLUSH)  # nothing stale from before we opened
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd

    @property
    def is_open(self) -> bool:
        return self.fd is not None

    def read(self, timeout_s: float) -> bytes:
        """What has arrived within timeout_s (b"" if nothing); LinkLost if the device left."""
        assert self.fd is not None
        try:
            ready, _, _ = select.select([self.fd], [], [], timeout_s)
            if not ready:
                return b""
            data = os.read(self.fd, 65536)
        except OSError as exc:
            if exc.errno in (errno.EIO, errno.ENXIO, errno.ENODEV, errno.EBADF):
                raise LinkLost(exc.errno, f"{self.path}: device gone ({exc.strerror})") from None
            raise
        if not data:  # EOF on a tty: the other end hung up
            raise LinkLost(errno.EIO, f"{self.path}: hung up")
        return data

    def write(self, data: bytes) -> None:
        assert self.fd is not None
        view = memoryview(data)
        while view:
            try:
                n = os.write(self.fd, view)
            except BlockingIOError:
                select.select([], [self.fd], [], 1.0)
                continue
            except OSError as exc:
                if exc.errno in (errno.EIO, errno.ENXIO, errno.ENODEV):
                    raise LinkLost(exc.errno, f"{self.path}: device gone") from None
                raise
            view = view[n:]

    def close(self) -> None:
        if self.fd is not None:
            try:
                os.close(self.fd)
            finally:
                self.fd = None
