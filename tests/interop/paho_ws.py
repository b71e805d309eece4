"""paho-mqtt over WebSocket against the broker at HOST:PORT (path /mqtt).

Usage: paho_ws.py HOST PORT {3.1.1|5}

Subscribes to paho/# at QoS 2, publishes one message at each QoS to itself, and prints
"received 0 1 2" once the three came back, each at the QoS it was sent with, and every
publish was acknowledged. Exits 1 on anything else within 10 seconds.
"""

import sys
import threading

import paho.mqtt.client as mqtt

host, port, version = sys.argv[1], int(sys.argv[2]), sys.argv[3]
protocol = mqtt.MQTTv5 if version == "5" else mqtt.MQTTv311
client_id = "paho-ws-v" + version.replace(".", "")
if hasattr(mqtt, "CallbackAPIVersion"):  # paho-mqtt 2
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION1, client_id,
                         protocol=protocol, transport="websockets")
else:
    client = mqtt.Client(client_id, protocol=protocol, transport="websockets")
client.ws_set_options(path="/mqtt")

subscribed = threading.Event()
done = threading.Event()
received = {}
acked = set()
lock = threading.Lock()


def check():
    if len(received) == 3 and len(acked) == 3:
        done.set()


def on_connect(client, userdata, flags, rc, properties=None):
    if rc != 0:
        print("refused", rc)
        sys.exit(1)
    client.subscribe("paho/#", qos=2)


def on_subscribe(client, userdata, mid, granted, properties=None):
    subscribed.set()


def on_message(client, userdata, message):
    with lock:
        received[message.topic] = message.qos
        check()


def on_publish(client, userdata, mid):
    with lock:
        acked.add(mid)
        check()


client.on_connect = on_connect
client.on_subscribe = on_subscribe
client.on_message = on_message
client.on_publish = on_publish
client.connect(host, port, keepalive=30)
client.loop_start()
if not subscribed.wait(10):
    print("no SUBACK")
    sys.exit(1)
for qos in (0, 1, 2):
    client.publish("paho/q%d" % qos, "from paho at QoS %d" % qos, qos=qos)
ok = done.wait(10)
client.disconnect()
client.loop_stop()
expected = {"paho/q0": 0, "paho/q1": 1, "paho/q2": 2}
if not ok or received != expected:
    print("got", received, "acked", sorted(acked))
    sys.exit(1)
print("received 0 1 2")
