"""Bag files without a ROS graph: writing, reading, versions, splits, damage, repair."""

import os
import shutil
import signal
import sqlite3
import subprocess
import sys

import numpy as np
import pytest
import yaml

from vla_ros.bags.metadata import MetadataError, parse_metadata, read_metadata
from vla_ros.bags.reader import BagError, BagReader
from vla_ros.bags.reindex import reindex
from vla_ros.bags.typestore import TypeRegistry, UnknownTypeError, rclpy_message_class
from vla_ros.bags.writer import BagWriteError, BagWriter

REG = TypeRegistry()
T = REG.store.types


def _string(text):
    return REG.serialize(T['std_msgs/msg/String'](data=text), 'std_msgs/msg/String')


def _image(i, w=16, h=12):
    header = T['std_msgs/msg/Header'](stamp=T['builtin_interfaces/msg/Time'](sec=1, nanosec=i),
                                      frame_id='cam')
    msg = T['sensor_msgs/msg/Image'](header=header, height=h, width=w, encoding='rgb8',
                                     is_bigendian=0, step=3 * w,
                                     data=np.full(h * w * 3, i % 256, np.uint8))
    return REG.serialize(msg, 'sensor_msgs/msg/Image')


def make_bag(path, storage='sqlite3', version=9, n=40, split=0, compress=False, flush_at=None):
    """40 strings at 100 Hz and an image every 4th step, from t = 1 s."""
    with BagWriter(path, storage, version, REG, max_file_bytes=split,
                   compress=compress) as w:
        w.set_custom_data('origin', 'test')
        chatter = w.add_topic('/chatter', 'std_msgs/msg/String')
        cam = w.add_topic('/cam', 'sensor_msgs/msg/Image')
        for i in range(n):
            w.write(chatter, 1_000_000_000 + i * 10_000_000, _string(f'msg {i}'))
            if i % 4 == 0:
                w.write(cam, 1_000_000_000 + i * 10_000_000 + 5, _image(i))
            if flush_at == i:
                w.flush()
    return path


@pytest.mark.parametrize('storage', ['sqlite3', 'mcap'])
@pytest.mark.parametrize('version', [5, 8, 9])
def test_round_trip_every_storage_and_metadata_version(tmp_path, storage, version):
    bag = make_bag(tmp_path / 'b', storage, version)
    meta = read_metadata(bag)
    assert meta.version == version and meta.storage == storage
    raw = yaml.safe_load((bag / 'metadata.yaml').read_text())['rosbag2_bagfile_information']
    topic = raw['topics_with_message_count'][0]['topic_metadata']
    assert ('type_description_hash' in topic) == (version >= 7)
    assert ('custom_data' in raw) == (version >= 6) and ('ros_distro' in raw) == (version >= 8)
    # v9 writes QoS as a YAML list, older versions as a string
    assert isinstance(topic['offered_qos_profiles'], list if version >= 9 else str)
    with BagReader(bag) as reader:
        assert reader.problems == []
        messages = list(reader.messages())
        assert {t.name: t.message_count for t in reader.topics} == {'/chatter': 40, '/cam': 10}
        assert [m.timestamp for m in messages] == sorted(m.timestamp for m in messages)
        strings = [reader.decode(m).data for m in messages if m.topic == '/chatter']
        assert strings == [f'msg {i}' for i in range(40)]
        image = reader.decode(next(m for m in messages if m.topic == '/cam'))
        assert (image.width, image.height, image.encoding) == (16, 12, 'rgb8')
    # the reference implementation reads what we wrote
    from rosbags.rosbag2 import Reader

    with Reader(bag) as ref:
        assert sum(1 for _ in ref.messages()) == 50


def test_sqlite_schema_follows_the_metadata_version(tmp_path):
    humble = make_bag(tmp_path / 'h', 'sqlite3', 5)
    kilted = make_bag(tmp_path / 'k', 'sqlite3', 9)
    for bag, schema, has_defs in ((humble, 3, False), (kilted, 4, True)):
        db = sqlite3.connect(next(bag.glob('*.db3')))
        assert db.execute('SELECT schema_version FROM schema').fetchone()[0] == schema
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert ('message_definitions' in tables) == has_defs
        # a finished bag is one file: the WAL has been folded back
        assert db.execute('PRAGMA journal_mode').fetchone()[0] == 'delete'
        db.close()
    assert not list(kilted.glob('*-wal'))


@pytest.mark.parametrize('storage', ['sqlite3', 'mcap'])
def test_split_bag_reads_in_time_order_across_files(tmp_path, storage):
    bag = make_bag(tmp_path / 'split', storage, 9, split=2500)
    meta = read_metadata(bag)
    assert len(meta.files) >= 3
    suffix = '.db3' if storage == 'sqlite3' else '.mcap'
    assert [f.path for f in meta.files] == [f'split_{i}{suffix}' for i in range(len(meta.files))]
    assert sum(f.message_count for f in meta.files) == meta.message_count == 50
    with BagReader(bag) as reader:
        stamps = [m.timestamp for m in reader.messages()]
    assert len(stamps) == 50 and stamps == sorted(stamps)


def test_compressed_mcap_chunks(tmp_path):
    plain = make_bag(tmp_path / 'plain', 'mcap')
    small = make_bag(tmp_path / 'small', 'mcap', compress=True)
    size = lambda b: sum(p.stat().st_size for p in b.iterdir())  # noqa: E731
    assert size(small) < size(plain)
    with BagReader(small) as reader:
        assert sum(1 for _ in reader.messages()) == 50
    with pytest.raises(BagWriteError, match='mcap'):
        BagWriter(tmp_path / 'x', 'sqlite3', compress=True)


def test_older_metadata_versions_parse(tmp_path):
    bag = make_bag(tmp_path / 'b', 'sqlite3', 9)
    doc = yaml.safe_load((bag / 'metadata.yaml').read_text())
    info = doc['rosbag2_bagfile_information']
    # a Foxy-era (version 4) file: no per-file list, no hashes, QoS as a string
    info['version'] = 4
    for key in ('files', 'custom_data', 'ros_distro'):
        info.pop(key)
    for t in info['topics_with_message_count']:
        t['topic_metadata'].pop('type_description_hash')
        t['topic_metadata']['offered_qos_profiles'] = ''
    (bag / 'metadata.yaml').write_text(yaml.safe_dump(doc))
    with BagReader(bag) as reader:
        assert reader.metadata.version == 4 and reader.problems == []
        assert reader.message_count == 50
    with pytest.raises(MetadataError, match='storage_identifier'):
        parse_metadata('rosbag2_bagfile_information: {version: 5}')


def test_missing_metadata_reads_storage_files(tmp_path):
    bag = make_bag(tmp_path / 'b', 'mcap', 9, split=2500)
    (bag / 'metadata.yaml').unlink()
    with BagReader(bag) as reader:
        assert reader.message_count == 50
        assert any('reindex' in p for p in reader.problems)
    with pytest.raises(BagError, match='not a rosbag2 bag'):
        BagReader(tmp_path)


def test_truncated_mcap_keeps_complete_records(tmp_path):
    bag = make_bag(tmp_path / 'b', 'mcap', 9, split=2500)
    files = sorted(bag.glob('*.mcap'))
    with open(files[1], 'r+b') as f:
        f.truncate(files[1].stat().st_size // 2)
    with BagReader(bag) as reader:
        got = list(reader.messages())
        text = ' '.join(reader.problems)
    assert files[1].name in text and 'truncated' in text
    # every other file is complete, and nothing is duplicated or out of order
    assert 30 <= len(got) < 50
    assert [m.timestamp for m in got] == sorted({m.timestamp for m in got})


def test_truncated_sqlite_file_salvages_rows_and_other_files(tmp_path):
    bag = make_bag(tmp_path / 'b', 'sqlite3', 9, split=2500)
    files = sorted(bag.glob('*.db3'))
    with open(files[0], 'r+b') as f:
        f.truncate(files[0].stat().st_size * 2 // 3)
    with BagReader(bag) as reader:
        got = list(reader.messages())
        problems = ' '.join(reader.problems)
    assert files[0].name in problems and 'salvaged' in problems
    later = [m for m in got if m.timestamp > 1_000_000_000 + 20 * 10_000_000]
    assert len(later) >= 20  # the undamaged files are read completely


def test_garbled_message_is_a_clear_per_message_error(tmp_path):
    bag = make_bag(tmp_path / 'b', 'sqlite3', 9)
    db = sqlite3.connect(next(bag.glob('*.db3')))
    db.execute("UPDATE messages SET data = X'000100000500' WHERE id = 3")  # length past end
    db.commit()
    db.close()
    with BagReader(bag) as reader:
        good, bad = 0, []
        for m in reader.messages(['/chatter']):
            try:
                reader.decode(m)
                good += 1
            except ValueError as exc:
                bad.append(str(exc))
    assert good == 39 and len(bad) == 1
    assert 'corrupt std_msgs/msg/String message on /chatter' in bad[0]


def test_unknown_types_are_learned_from_the_bag_or_reported(tmp_path):
    definition = 'string name\nfloat64[] values\n'
    registry = TypeRegistry()
    assert not registry.resolve('foo_msgs/msg/Bar')
    assert registry.register_definition('foo_msgs/msg/Bar', definition)
    # a fresh registry (a reader) learns it from the bag's stored definition
    data = registry.serialize(registry.store.types['foo_msgs/msg/Bar'](
        name='a', values=np.array([1.0, 2.0])), 'foo_msgs/msg/Bar')
    bag = tmp_path / 'b'
    with BagWriter(bag, 'mcap', 9, registry) as w:
        key = w.add_topic('/bar', 'foo_msgs/msg/Bar')
        w.write(key, 5, data)
        w.write(w.add_topic('/chatter', 'std_msgs/msg/String'), 6, _string('x'))
    with BagReader(bag) as reader:
        bar = next(reader.messages(['/bar']))
        assert reader.decode(bar).name == 'a'
    with pytest.raises(UnknownTypeError, match='not installed'):
        rclpy_message_class('foo_msgs/msg/Bar')
    # without a stored definition (a Humble bag) the type stays unknown, with the reason
    humble = tmp_path / 'h'
    with BagWriter(humble, 'sqlite3', 5, TypeRegistry()) as w:
        w.write(w.add_topic('/bar', 'foo_msgs/msg/Bar'), 5, data)
    with BagReader(humble) as reader:
        with pytest.raises(UnknownTypeError, match='no definition'):
            reader.decode(next(reader.messages()))


_KILLED_WRITER = '''
import os, sys
from vla_ros.bags.writer import BagWriter
from vla_ros.bags.typestore import TypeRegistry
reg = TypeRegistry()
w = BagWriter(sys.argv[1], sys.argv[2], 9, reg)
key = w.add_topic('/chatter', 'std_msgs/msg/String')
String = reg.store.types['std_msgs/msg/String']
for i in range(100):
    w.write(key, 10**9 + i * 10**6, reg.serialize(String(data=str(i)), 'std_msgs/msg/String'))
    if i == 59:
        w.flush()
os.kill(os.getpid(), 9)
'''


@pytest.mark.parametrize('storage', ['sqlite3', 'mcap'])
def test_killed_recording_stays_readable_and_reindex_repairs_it(tmp_path, storage):
    bag = tmp_path / 'killed'
    proc = subprocess.run([sys.executable, '-c', _KILLED_WRITER, str(bag), storage])
    assert proc.returncode == -signal.SIGKILL
    with BagReader(bag) as reader:
        assert reader.message_count >= 60  # everything up to the last flush
        assert reader.problems  # and it says the recording did not finish
    report = reindex(bag)
    assert report['problems_left'] == []
    assert read_metadata(bag).message_count >= 60
    assert sorted(p.name for p in bag.iterdir()) == sorted(
        ['metadata.yaml', f'killed_0.{"db3" if storage == "sqlite3" else "mcap"}'])
    from rosbags.rosbag2 import Reader

    with Reader(bag) as ref:  # a standard bag again
        assert sum(1 for _ in ref.messages()) >= 60


def test_writer_refuses_bad_input(tmp_path):
    make_bag(tmp_path / 'b')
    with pytest.raises(BagWriteError, match='exists'):
        BagWriter(tmp_path / 'b')
    with pytest.raises(BagWriteError, match='version'):
        BagWriter(tmp_path / 'c', version=7)
    with pytest.raises(BagWriteError, match='storage'):
        BagWriter(tmp_path / 'd', storage='rosbag1')
    assert not os.path.exists(tmp_path / 'c')


def test_copy_of_bag_is_independent(tmp_path):
    # reading never modifies the bag on disk (recovery happens in temporary copies)
    bag = make_bag(tmp_path / 'b', 'sqlite3')
    before = {p.name: p.read_bytes() for p in bag.iterdir()}
    with BagReader(bag) as reader:
        list(reader.messages())
    assert {p.name: p.read_bytes() for p in bag.iterdir()} == before
    shutil.rmtree(bag)


def _chunk_message(registry, **extra):
    types = registry.store.types
    return types['vla_ros_msgs/msg/ActionChunk'](
        header=types['std_msgs/msg/Header'](
            stamp=types['builtin_interfaces/msg/Time'](sec=5, nanosec=0), frame_id=''),
        policy='scripted', horizon=1, action_dim=2,
        actions=np.array([0.1, 0.2], np.float32),
        control_period=types['builtin_interfaces/msg/Duration'](sec=0, nanosec=100_000_000),
        dimension_names=['x', 'y'], **extra)


def test_a_bag_keeps_decoding_with_the_definition_it_was_recorded_with(tmp_path):
    # Bags recorded before ActionChunk gained buffered_after_command carry the old
    # definition; a reader must decode them with it, not with msg/ of today.
    from vla_ros.bags.session import _buffered_after

    current = (os.path.dirname(__file__) + '/../msg/ActionChunk.msg')
    with open(current) as f:
        text = f.read()
    old = text[:text.index('\n# Stamp of the last control command')] + '\n'
    assert 'buffered_after_command' in text and 'buffered_after_command' not in old
    topic = '/vla/action_chunk'
    for name, definition in (('old', old), ('new', None)):
        registry = TypeRegistry()
        if definition is not None:
            assert registry.register_definition('vla_ros_msgs/msg/ActionChunk', definition)
        assert registry.resolve('vla_ros_msgs/msg/ActionChunk')
        extra = {} if definition is not None else {
            'buffered_after_command':
                registry.store.types['builtin_interfaces/msg/Time'](sec=4, nanosec=900)}
        data = registry.serialize(_chunk_message(registry, **extra),
                                  'vla_ros_msgs/msg/ActionChunk')
        with BagWriter(tmp_path / name, 'mcap', 9, registry) as w:
            w.write(w.add_topic(topic, 'vla_ros_msgs/msg/ActionChunk'), 10**9, data)
        with BagReader(tmp_path / name) as reader:
            msg = reader.decode(next(reader.messages([topic])))
        assert list(msg.dimension_names) == ['x', 'y']
        np.testing.assert_allclose(msg.actions, [0.1, 0.2])
        if definition is not None:
            assert not hasattr(msg, 'buffered_after_command')
            assert _buffered_after(msg) is None
        else:
            assert _buffered_after(msg) == pytest.approx(4.0000009)


def test_an_installed_type_loads_with_the_installed_types_it_nests(tmp_path, monkeypatch):
    msg = tmp_path / 'share' / 'foo_msgs' / 'msg'
    msg.mkdir(parents=True)
    (msg / 'Inner.msg').write_text('float64 value\n')
    (msg / 'Outer.msg').write_text('std_msgs/Header header\nfoo_msgs/Inner[] inner\n')
    monkeypatch.setenv('AMENT_PREFIX_PATH', str(tmp_path))
    registry = TypeRegistry()
    assert registry.resolve('foo_msgs/msg/Outer'), registry.why_unknown('foo_msgs/msg/Outer')
    assert registry.knows('foo_msgs/msg/Inner')
