"""MQTT delivery of the spool, in order, at least once; the rest of the daemon never sees paho.

The daemon depends on the small `Publisher` interface only (so its wiring can be tested without
a broker). It calls `publish(kind, body)`: the message is written to the spool (and given its
seq) before anything else, and a sender thread moves the spool to the broker in order with a
bounded window of unacknowledged messages, deleting each only when its PUBACK arrives. Each
connection gets a fresh paho client, so after a reconnect nothing paho kept from the old
connection can overtake the spool's order: sending restarts at the oldest unacknowledged
message (duplicates are possible; `seq` identifies them). Reconnects back off exponentially with
jitter so a fleet does not reconnect in step after a broker restart.

Latest-value messages (the retained status, Home Assistant's discovery and state) bypass the
spool: only the newest matters, and it is sent again on every connection.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import random
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from edge import clock
from edge.clock import wall_clock_synced
from edge.delivery.settings import MqttConfig, SpoolConfig, TlsConfig
from edge.delivery.spool import Spool
from edge.delivery.wire import (
    KINDS,
    SCHEMA_VERSION,
    Body,
    Envelope,
    RunningModel,
    Status,
    body_dict,
    iso_ms,
    kind_of,
    topic,
)
from edge.vocabulary import DeviceState

if TYPE_CHECKING:  # paho is imported where a client is made; its types only for checking
    from paho.mqtt.client import Client, ConnectFlags, DisconnectFlags, MQTTMessage
    from paho.mqtt.properties import Properties
    from paho.mqtt.reasoncodes import ReasonCode

log = logging.getLogger(__name__)

INFLIGHT = 20


class DeliveryError(RuntimeError):
    """Delivery cannot work as configured (e.g. a TLS file it cannot read): the message names
    the config key."""


def tls_files(tls: TlsConfig) -> str:
    named = [f"{key} {value}" for key, value in (("ca_file", tls.ca_file),
                                                 ("cert_file", tls.cert_file),
                                                 ("key_file", tls.key_file)) if value]
    return ", ".join(named) or "the system's CAs"


class Publisher(Protocol):
    """What the daemon needs of delivery."""

    def start(self) -> None: ...

    def publish(self, body: Body) -> int:
        """Stores a message for delivery on its kind's topic (`kind_of`); returns its seq."""
        ...

    def set_status(self, state: DeviceState, reasons: list[str]) -> None: ...

    def set_model(self, model: RunningModel) -> None:
        """The model the device now classifies with (a package swapped in): said in the status
        at once."""
        ...

    def retain(self, topic: str, payload: bytes) -> None:
        """Keeps `payload` as the retained latest value of `topic` (sent now if connected, and
        on every connection)."""
        ...

    def unreachable(self) -> str:
        """Why the broker cannot be reached now ("" while delivery works or is starting)."""
        ...

    def refused(self) -> str:
        """Why the broker refuses the messages it is sent ("" while it takes them)."""
        ...

    def flush(self, timeout_s: float) -> bool:
        """True once everything stored is delivered (or False after timeout_s)."""
        ...

    def delivery(self) -> Delivery:
        """What delivery holds and has lost, for the device's status and stats."""
        ...

    def close(self, final_state: DeviceState = "offline", reason: str = "shutdown") -> None:
        """Publishes the final status, stops, and closes what it stores messages in."""
        ...


NOTICE_S = 3600.0  # a one-off storage event (a spool moved aside) stays in the status this long


@dataclass(frozen=True, kw_only=True)
class Delivery:
    """Delivery as the daemon reports it, whatever carries the messages: waiting, lost,
    and the trouble of the storage behind it."""
    depth: int = 0  # messages waiting for the broker, on disk and in memory
    in_memory: int = 0  # of those, held in memory: the disk refused them
    dropped: int = 0  # in the storage's lifetime (stats carry it)
    dropped_recent: int = 0  # in the last spool.drops_window_s (the status says so)
    fault: str = ""  # the storage cannot be written (a full or failing card)
    stranded: int = 0  # messages on a card that can no longer be read
    notice: str = ""  # a one-off event worth hearing for a while (a spool moved aside)

    def storage_problem(self) -> str:
        """The storage's trouble as a status reason ('' if none)."""
        fault = self.fault + (f" ({self.stranded} message(s) on it cannot be read)"
                              if self.stranded else "") if self.fault else ""
        return "; ".join(p for p in (fault, self.notice) if p)


def open_publisher(mqtt: MqttConfig, spool: SpoolConfig, *, device_id: str, model: RunningModel,
                   birth_topic: str | None, breathing_pause_s: float) -> MqttPublisher:
    """The device's delivery: MQTT through its spool on the card."""
    return MqttPublisher(mqtt, device_id,
                         Spool(spool.path, spool.max_messages, spool.memory_messages),
                         model=model, birth_topic=birth_topic,
                         drops_window_s=spool.drops_window_s,
                         breathing_pause_s=breathing_pause_s)


def envelope(device_id: str, seq: int, epoch: str) -> dict[str, Any]:
    return body_dict(Envelope(schema_version=SCHEMA_VERSION, device_id=device_id, epoch=epoch,
                              seq=seq, ts=iso_ms(clock.wall()),
                              clock_synced=wall_clock_synced()))


class MqttPublisher:
    """Delivery over MQTT: the spool on the card, and the thread that empties it to the
    broker in order, at least once."""

    def __init__(self, cfg: MqttConfig, device_id: str, spool: Spool, *,
                 model: RunningModel | None = None, birth_topic: str | None = None,
                 drops_window_s: float = 3600.0, breathing_pause_s: float = 30.0) -> None:
        """`birth_topic`: when "online" arrives there (a Home Assistant restarted), the
        retained latest values are sent again. `breathing_pause_s`: the pause that ends a
        stretch of breathing (`edge.pipeline.breathing`), which the status tells readers."""
        self.cfg = cfg
        self.breathing_pause_s = breathing_pause_s
        self.device_id = device_id
        self.spool = spool
        self.drops_window_s = drops_window_s
        # (when, the spool's lifetime drop count): what it dropped recently
        self._drops: deque[tuple[float, int]] = deque([(time.monotonic(),
                                                        sum(spool.dropped().values()))])
        self._notice_until = time.monotonic() + NOTICE_S if spool.notice else 0.0
        self.model = model
        self.birth_topic = birth_topic
        self._retained: dict[str, bytes] = {}
        self._retained_lock = threading.Lock()
        self.password = cfg.password()  # read once at start; never logged
        self._connected = threading.Event()
        self.last_error = ""
        # The broker's last refusal of a message (MQTT 5 PUBACK reason), while it lasts: a
        # broker whose ACL does not let this user publish under this device's topics answers
        # "Not authorized" to every message; under MQTT 3.1.1 it acknowledged and dropped all
        # 34 of them, the device deleted them, and said "online".
        self.refusal = ""
        self._status: tuple[DeviceState, list[str]] = ("online", [])
        self._connected_at = time.time()  # the current connection's, for its statuses
        self._wake = threading.Event()
        self._stop = threading.Event()
        # paho's thread only posts acknowledged message ids here; the sender thread alone
        # owns the in-flight map. (Taking a lock in a paho callback while holding it around
        # publish() deadlocks against paho's own lock.)
        self._acks: queue.SimpleQueue[tuple[int, str]] = queue.SimpleQueue()  # (mid, refusal)
        self._client: Client | None = None
        self._thread = threading.Thread(target=self._run, name="mqtt", daemon=True)

    def start(self) -> None:
        self._thread.start()

    # -- what the daemon calls --------------------------------------------------------------
    def unreachable(self) -> str:
        return "" if self._connected.is_set() else self.last_error

    def refused(self) -> str:
        return self.refusal

    def publish(self, body: Body) -> int:
        seq = self.spool.put(kind_of(body), lambda seq, epoch: envelope(self.device_id, seq, epoch),
                             body_dict(body))
        self._wake.set()
        return seq

    def set_status(self, state: DeviceState, reasons: list[str]) -> None:
        if (state, reasons) == self._status:
            return
        self._status = (state, list(reasons))
        client = self._client
        if client is not None and self._connected.is_set():
            self._publish_status(client)

    def set_model(self, model: RunningModel) -> None:
        self.model = model
        client = self._client
        if client is not None and self._connected.is_set():
            self._publish_status(client)

    def retain(self, topic: str, payload: bytes) -> None:
        with self._retained_lock:
            if self._retained.get(topic) == payload:
                return
            self._retained[topic] = payload
        client = self._client
        if client is not None and self._connected.is_set():
            client.publish(topic, payload, qos=1, retain=True)

    def flush(self, timeout_s: float) -> bool:
        """Waits until the spool is empty (all acknowledged) or timeout_s passes."""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if self.spool.depth() == 0:
                return True
            self._wake.set()
            time.sleep(0.05)
        return self.spool.depth() == 0

    def delivery(self) -> Delivery:
        now, total = time.monotonic(), sum(self.spool.dropped().values())
        self._drops.append((now, total))
        while self._drops and self._drops[0][0] < now - self.drops_window_s:
            self._drops.popleft()
        return Delivery(
            depth=self.spool.depth(), in_memory=self.spool.in_memory(), dropped=total,
            dropped_recent=total - self._drops[0][1] if len(self._drops) > 1 else 0,
            fault=self.spool.fault, stranded=self.spool.stranded(),
            notice=self.spool.notice if now < self._notice_until else "")

    def close(self, final_state: DeviceState = "offline", reason: str = "shutdown") -> None:
        """Publishes the final status (retained), disconnects cleanly, closes the spool."""
        client = self._client
        if client is not None and self._connected.is_set():
            info = client.publish(topic(self.cfg.topic_prefix, self.device_id, "status"),
                                  self._status_payload(final_state, [reason], False), qos=1,
                                  retain=True)
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(timeout=3)
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=5)
        self.spool.close()

    # -- the sender thread -------------------------------------------------------------------
    def _status_payload(self, state: DeviceState, reasons: list[str], last_will: bool
                        ) -> bytes:
        status = Status(state=state, reason=reasons[0] if reasons else None, reasons=reasons,
                        model=self.model, connected_at=iso_ms(self._connected_at),
                        last_will=last_will, heartbeat_s=self.cfg.stats_interval_s,
                        breathing_pause_s=self.breathing_pause_s)
        body = {**envelope(self.device_id, self.spool.next_seq("status"), self.spool.epoch),
                **body_dict(status)}
        return json.dumps(body, separators=(",", ":")).encode()

    def _publish_retained(self, client: Client) -> None:
        with self._retained_lock:
            retained = list(self._retained.items())
        for name, payload in retained:
            client.publish(name, payload, qos=1, retain=True)

    def _publish_status(self, client: Client) -> None:
        state, reasons = self._status
        client.publish(topic(self.cfg.topic_prefix, self.device_id, "status"),
                       self._status_payload(state, reasons, False), qos=1, retain=True)

    def _new_client(self) -> Client:
        import paho.mqtt.client as mqtt

        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                             client_id=f"lungedge-{self.device_id}", protocol=mqtt.MQTTv5)
        if self.cfg.username:
            client.username_pw_set(self.cfg.username, self.password)
        tls = self.cfg.tls
        if tls.enabled:
            try:
                client.tls_set(ca_certs=tls.ca_file, certfile=tls.cert_file,
                               keyfile=tls.key_file)
            except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
                raise DeliveryError(f"mqtt.tls: cannot use {tls_files(tls)} ({exc})") from None
        # the will is written now, for the connection about to be made: every status of
        # that connection carries the same connected_at, so a station orders them
        self._connected_at = time.time()
        client.will_set(topic(self.cfg.topic_prefix, self.device_id, "status"),
                        self._status_payload("offline", ["connection lost"], True), qos=1,
                        retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        return client

    def _on_connect(self, client: Client, userdata: Any, flags: ConnectFlags,
                    reason: ReasonCode, properties: Properties | None) -> None:
        if reason.is_failure:
            self.last_error = f"broker refused the connection: {reason}"
            log.error("%s", self.last_error)
            return
        self.last_error = ""
        log.info("connected to %s:%d", self.cfg.host, self.cfg.port)
        self._publish_status(client)
        self._publish_retained(client)
        if self.birth_topic:
            client.subscribe(self.birth_topic, qos=1)
        self._connected.set()
        self._wake.set()

    def _on_disconnect(self, client: Client, userdata: Any, flags: DisconnectFlags,
                       reason: ReasonCode, properties: Properties | None) -> None:
        if self._connected.is_set():
            log.log(logging.INFO if self._stop.is_set() else logging.WARNING,
                    "disconnected from the broker (%s)", reason)
        self._connected.clear()
        self._wake.set()

    def _on_message(self, client: Client, userdata: Any, msg: MQTTMessage) -> None:
        if msg.topic == self.birth_topic and msg.payload == b"online":
            log.info("%s is online: sending discovery and state again", msg.topic)
            self._publish_retained(client)

    def _on_publish(self, client: Client, userdata: Any, mid: int, reason: ReasonCode,
                    properties: Properties | None) -> None:
        self._acks.put((mid, str(reason) if reason.is_failure else ""))
        self._wake.set()

    def _run(self) -> None:
        """The sender thread, supervised: whatever fails in a connection's set-up or its
        sending (a TLS file that cannot be read, a bug) becomes the reason delivery is down
        (`unreachable()`, so the status says so) and is retried with backoff; the thread never
        ends before close()."""
        attempt = 0
        while not self._stop.is_set():
            try:
                attempt = self._connection(attempt)
            except Exception as exc:
                reason = str(exc) if isinstance(exc, DeliveryError) \
                    else f"delivery failed: {type(exc).__name__}: {exc}"
                if reason != self.last_error:
                    log.error("%s", reason, exc_info=not isinstance(exc, DeliveryError))
                self.last_error = reason
                self._connected.clear()
                self._client = None
                attempt += 1
                self._stop.wait(self._backoff(attempt))

    def _refused(self, reason: str) -> None:
        """The broker refused a message: it stays in the spool, the status says so (until a
        message is taken again), and this connection ends so that the sending backs off
        instead of offering the broker the same message in a loop."""
        why = f"the broker refuses the messages: {reason}"
        if "authori" in reason.lower():
            why += (f" (may user {self.cfg.username!r} publish under {self.cfg.topic_prefix}/"
                    f"{self.device_id}/? the shipped ACL lets each user publish under its own "
                    "name only)")
        if why != self.refusal:
            log.error("%s; they stay in the spool and are offered again", why)
        self.refusal = why

    def _backoff(self, attempt: int) -> float:
        """Exponential, with jitter: devices do not retry in step after a broker restart."""
        return min(self.cfg.reconnect_max_s, self.cfg.reconnect_min_s
                   * 2 ** min(attempt, 16)) * random.uniform(0.5, 1.0)

    def _connection(self, attempt: int) -> int:
        """One connection, from client to disconnect; returns the attempt count to go on
        with."""
        while not self._stop.is_set():
            client = self._new_client()
            try:
                client.connect(self.cfg.host, self.cfg.port, self.cfg.keepalive_s,
                               clean_start=True)
            except (OSError, ValueError) as exc:
                self.last_error = f"broker {self.cfg.host}:{self.cfg.port} unreachable: {exc}"
                delay = self._backoff(attempt)
                log.warning("%s; retrying in %.1f s", self.last_error, delay)
                attempt += 1
                self._stop.wait(delay)
                continue
            self._client = client
            client.loop_start()
            try:
                if self._connected.wait(timeout=10):
                    attempt = 0
                    self._send(client)
            finally:
                client.loop_stop()
                client.disconnect()
                self._client = None
                self._connected.clear()
            if not self._stop.is_set():
                attempt += 1
                self._stop.wait(self._backoff(attempt))
        return attempt

    def _send(self, client: Client) -> None:
        while not self._acks.empty():  # from an earlier connection: its mids mean nothing now
            self._acks.get_nowait()
        inflight: dict[int, int] = {}  # paho mid → spool id, on this connection
        last = 0  # spool id sent last on this connection: always resume from the oldest
        generation = self.spool.generation
        while self._connected.is_set() and not self._stop.is_set():
            self._wake.clear()
            if self.spool.generation != generation:  # the spool file was reopened: what it
                generation = self.spool.generation   # holds may lie below `last`
                last = 0
            while not self._acks.empty():
                mid, refusal = self._acks.get_nowait()
                spool_id = inflight.pop(mid, None)
                if spool_id is None:
                    continue
                if refusal:  # kept in the spool; sent again after a back-off
                    self._refused(refusal)
                    return
                self.refusal = ""
                self.spool.delete(spool_id)
            room = INFLIGHT - len(inflight)
            sending = set(inflight.values())
            for row in self.spool.peek(after_id=last, limit=room) if room > 0 else []:
                if row.id in sending:
                    continue
                kind = KINDS[row.kind]
                info = client.publish(topic(self.cfg.topic_prefix, self.device_id, row.kind),
                                      row.payload, qos=kind.qos, retain=kind.retain)
                if info.rc != 0:
                    break
                inflight[info.mid] = row.id  # its ack is handled on a later pass
                last = row.id
            self._wake.wait(0.5)
