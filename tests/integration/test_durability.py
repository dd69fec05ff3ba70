#!/usr/bin/env python3
"""test_durability.py — what survives a restart of the daemon on the same
state directory: every committed write (objects created and destroyed,
fields set, map keys and set members), with the same refs and uuids, and
no duplicate of what the first start made; sessions do not survive (as in
XenAPI).  Then the promise of DESIGN.md: a call that changed the database
returns only once the change is on disk, so kill -9 during concurrent
writes (8 threads, each on its own objects) loses no acknowledged write,
round after round, and the database always loads again."""
import http.client
import random
import threading
import time
import xmlrpc.client

from xapitest import (Daemon, DaemonError, XenAPIError, check, expect_error,
                      finish_daemon, full_record, load_idl, start_or_bail,
                      tap)

model = load_idl()
d = start_or_bail(Daemon(tls=False))
N_THREADS = 8
ROUNDS = 3
S = {}


def vm_record(label):
    return full_record(model, 'VM', name_label=label,
                       memory_static_max='1073741824',
                       memory_dynamic_max='1073741824',
                       memory_dynamic_min='536870912',
                       memory_static_min='536870912', VCPUs_max='1',
                       VCPUs_at_startup='1', actions_after_crash='restart',
                       other_config={})


def restart_and_login(kill=False):
    if kill:
        d.kill()
    else:
        rc = d.stop()
        assert rc == 0, 'exit status %r' % rc
    d.start()
    c = d.client()
    return c, c.session.login_with_password('root', d.password)


try:
    c = d.client()
    s = c.session.login_with_password('root', d.password)

    # ---- a clean restart ----

    @tap.test('test_writes_before_a_clean_restart')
    def _():
        host = c.host.get_all(s)[0]
        dom0 = c.host.get_control_domain(s, host)
        c.host.set_name_label(s, host, 'durable-host')
        c.host.add_to_other_config(s, host, 'hk', 'hv')
        c.VM.add_tags(s, dom0, 'durable-tag')
        net = c.network.create(s, {'name_label': 'durable-net',
                                   'other_config': {'a': '1'},
                                   'MTU': '9000', 'bridge': 'xenbr9'})
        gone = c.network.create(s, {'name_label': 'doomed-net',
                                    'other_config': {}})
        c.network.destroy(s, gone)
        vm = c.VM.create(s, vm_record('durable-vm'))
        vbd = c.VBD.create(s, full_record(
            model, 'VBD', VM=vm, VDI='OpaqueRef:NULL', userdevice='0',
            mode='RO', type='CD', empty=True))
        c.VM.set_other_config(s, vm, {'x': 'y', 'big': str(2 ** 60)})
        S.update(host=host, dom0=dom0, net=net, gone=gone, vm=vm, vbd=vbd,
                 net_uuid=c.network.get_uuid(s, net),
                 vm_uuid=c.VM.get_uuid(s, vm), old_session=s,
                 counts={k: len(c.call(k + '.get_all', s))
                         for k in ('pool', 'host', 'host_metrics',
                                   'host_cpu', 'VM', 'VM_metrics')})

    c, s = restart_and_login()

    @tap.test('test_restart_keeps_fields_set_and_map_keys')
    def _():
        host = S['host']
        assert c.host.get_name_label(s, host) == 'durable-host'
        assert c.host.get_other_config(s, host).get('hk') == 'hv'
        assert 'durable-tag' in c.VM.get_tags(s, S['dom0'])
        assert c.VM.get_other_config(s, S['vm']) == {'x': 'y',
                                                     'big': str(2 ** 60)}

    @tap.test('test_restart_keeps_created_objects_with_their_refs_and_uuids')
    def _():
        rec = c.network.get_record(s, S['net'])
        assert rec['name_label'] == 'durable-net', rec
        assert rec['MTU'] == '9000' and rec['bridge'] == 'xenbr9', rec
        assert rec['other_config'] == {'a': '1'}, rec
        assert rec['uuid'] == S['net_uuid'], rec['uuid']
        assert c.network.get_by_uuid(s, S['net_uuid']) == S['net']
        assert c.VM.get_by_uuid(s, S['vm_uuid']) == S['vm']
        assert c.VM.get_name_label(s, S['vm']) == 'durable-vm'

    @tap.test('test_restart_keeps_relations')
    def _():
        assert c.VM.get_VBDs(s, S['vm']) == [S['vbd']]
        assert c.VBD.get_VM(s, S['vbd']) == S['vm']
        assert S['dom0'] in c.host.get_resident_VMs(s, S['host'])

    @tap.test('test_restart_keeps_destroyed_objects_destroyed')
    def _():
        expect_error(lambda: c.network.get_record(s, S['gone']),
                     'HANDLE_INVALID', ['network', S['gone']])
        assert c.network.get_by_name_label(s, 'doomed-net') == []

    @tap.test('test_restart_does_not_duplicate_the_first_start_objects')
    def _():
        counts = {k: len(c.call(k + '.get_all', s)) for k in S['counts']}
        assert counts == S['counts'], (counts, S['counts'])
        assert c.host.get_by_uuid(s, d.host_uuid) == S['host']

    @tap.test('test_sessions_do_not_survive_a_restart')
    def _():
        old = S['old_session']
        expect_error(lambda: c.VM.get_all(old), 'SESSION_INVALID', [old])

    # ---- kill -9 after acknowledged writes ----

    @tap.test('test_kill_9_after_acknowledged_writes_loses_nothing')
    def _():
        global c, s
        for i in range(20):
            c.host.add_to_other_config(s, S['host'], 'k9-%d' % i, str(i))
        c.network.set_name_label(s, S['net'], 'after-kill')
        c, s = restart_and_login(kill=True)
        oc = c.host.get_other_config(s, S['host'])
        missing = [i for i in range(20) if oc.get('k9-%d' % i) != str(i)]
        assert not missing, 'lost keys %s' % missing
        assert c.network.get_name_label(s, S['net']) == 'after-kill'

    # ---- concurrent writers on one object ----

    @tap.test('test_concurrent_map_and_set_writes_to_one_object_lose_nothing')
    def _():
        target = c.VM.create(s, vm_record('shared'))
        errs = []

        def writer(i):
            cl = d.client()
            try:
                for j in range(25):
                    cl.VM.add_to_other_config(s, target, 't%d-%d' % (i, j),
                                              str(j))
                    cl.VM.add_tags(s, target, 'tag-%d-%d' % (i, j))
            except Exception as e:
                errs.append('%s: %s' % (type(e).__name__, e))
        ts = [threading.Thread(target=writer, args=(i,))
              for i in range(N_THREADS)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        assert not errs, errs[:3]
        oc = c.VM.get_other_config(s, target)
        tags = set(c.VM.get_tags(s, target))
        lost = ['t%d-%d' % (i, j) for i in range(N_THREADS) for j in range(25)
                if oc.get('t%d-%d' % (i, j)) != str(j)]
        lost_tags = ['tag-%d-%d' % (i, j) for i in range(N_THREADS)
                     for j in range(25) if 'tag-%d-%d' % (i, j) not in tags]
        assert not lost and not lost_tags, \
            'lost %d keys (%s) and %d tags (%s)' % (len(lost), lost[:5],
                                                    len(lost_tags),
                                                    lost_tags[:5])
        c.VM.destroy(s, target)

    # ---- kill -9 during concurrent writes ----

    class Writer(threading.Thread):
        """Writes to its own VM: set_name_label with an increasing counter
        and add_to_other_config of a new key each time; every tenth write
        creates a network.  Records what was acknowledged."""

        def __init__(self, idx, vm, session, rnd):
            threading.Thread.__init__(self, daemon=True)
            self.idx, self.vm, self.session, self.rnd = idx, vm, session, rnd
            self.last_label = None
            self.keys = []
            self.nets = []
            self.error = None
            self.calls = 0
            self.stop = False

        def run(self):
            cl = d.client(timeout=10)
            i = 0
            try:
                while not self.stop:
                    i += 1
                    cl.VM.set_name_label(self.session, self.vm,
                                         '%d' % (self.rnd * 1000000 + i))
                    self.last_label = self.rnd * 1000000 + i
                    key = 'r%d-%d' % (self.rnd, i)
                    cl.VM.add_to_other_config(self.session, self.vm, key,
                                              str(i))
                    self.keys.append((key, str(i)))
                    if i % 10 == 0:
                        net = cl.network.create(self.session, {
                            'name_label': 'w%d-r%d-%d' % (self.idx, self.rnd,
                                                          i),
                            'other_config': {}})
                        self.nets.append(net)
                    self.calls = i
            except XenAPIError as e:
                self.error = 'XenAPI error %r' % e.details
            except (OSError, xmlrpc.client.ProtocolError,
                    http.client.HTTPException):
                pass        # the daemon was killed
            except Exception as e:
                self.error = '%s: %s' % (type(e).__name__, e)

    vms = [c.VM.create(s, vm_record('writer-%d' % i))
           for i in range(N_THREADS)]
    rng = random.Random()
    for rnd in range(1, ROUNDS + 1):
        writers = [Writer(i, vms[i], s, rnd) for i in range(N_THREADS)]
        for w in writers:
            w.start()
        delay = rng.uniform(1.0, 2.0)
        time.sleep(delay)
        d.kill()
        for w in writers:
            w.stop = True
            w.join(15)
        loaded = True
        try:
            d.start()
            c = d.client()
            s = c.session.login_with_password('root', d.password)
        except (DaemonError, OSError, XenAPIError) as e:
            loaded = False
            check('test_database_loads_after_kill_9_round_%d' % rnd, False,
                  str(e))
            break
        check('test_database_loads_after_kill_9_round_%d' % rnd, loaded)

        def verify():
            probs = []
            total = sum(len(w.keys) for w in writers)
            for w in writers:
                if w.error:
                    probs.append('writer %d: %s' % (w.idx, w.error))
                if w.calls == 0 and not w.keys:
                    probs.append('writer %d acknowledged nothing in %.1fs'
                                 % (w.idx, delay))
                label = c.VM.get_name_label(s, w.vm)
                if w.last_label is not None and (
                        not label.isdigit() or int(label) < w.last_label):
                    probs.append('writer %d: name_label %r older than the '
                                 'acknowledged %d' % (w.idx, label,
                                                      w.last_label))
                oc = c.VM.get_other_config(s, w.vm)
                lost = [k for k, v in w.keys if oc.get(k) != v]
                if lost:
                    probs.append('writer %d: %d of %d acknowledged keys '
                                 'lost, e.g. %s' % (w.idx, len(lost),
                                                    len(w.keys), lost[:5]))
                for net in w.nets:
                    try:
                        c.network.get_record(s, net)
                    except XenAPIError as e:
                        probs.append('writer %d: network %s lost: %r'
                                     % (w.idx, net, e.details))
            print('# round %d: killed after %.2fs, %d acknowledged keys'
                  % (rnd, delay, total))
            assert total > 0, 'no write was acknowledged before the kill'
            assert not probs, '\n'.join(probs[:30])

        tap.run('test_kill_9_during_concurrent_writes_loses_no_acknowledged_'
                'write_round_%d' % rnd, verify)

    @tap.test('test_first_start_objects_intact_after_the_kill_rounds')
    def _():
        counts = {k: len(c.call(k + '.get_all', s)) for k in S['counts']}
        want = dict(S['counts'], VM=S['counts']['VM'] + N_THREADS)
        assert counts == want, (counts, want)

    # ---- one daemon per state directory ----

    @tap.test('test_second_daemon_on_the_same_state_dir_is_refused')
    def _():
        # Two daemons on one database keep diverging copies in memory and
        # the second takes over (then removes) the first one's Unix socket.
        d2 = Daemon(tls=False, password=d.password)
        d2.state_dir = d.state_dir
        try:
            try:
                d2.start(timeout=15)
            except DaemonError:
                started = False
            else:
                started = True
                d2.stop()
        finally:
            d2.cleanup()
        try:
            u = d.unix_client(timeout=10)
            u.pool.get_all(u.session.login_with_password('root', d.password))
            socket_ok = True
        except (OSError, XenAPIError):
            socket_ok = False
        assert not started and socket_ok, (
            '%s%s' % ('a second xapi started on %s while the first runs: %s\n'
                      % (d.state_dir, d2.ready_line) if started else '',
                      '' if socket_ok else 'the first daemon lost its Unix '
                      'socket %s' % d.unix_path))

    # ---- SIGTERM under load ----

    @tap.test('test_sigterm_during_concurrent_writes_exits_cleanly_and_keeps_acknowledged_writes')
    def _():
        global c, s
        acked = [[] for _ in range(N_THREADS)]
        stop = []

        def writer(i):
            cl = d.client(timeout=10)
            j = 0
            while not stop:
                j += 1
                try:
                    cl.VM.add_to_other_config(s, vms[i], 'term-%d' % j,
                                              str(j))
                except Exception:
                    return
                acked[i].append(j)
        ts = [threading.Thread(target=writer, args=(i,), daemon=True)
              for i in range(N_THREADS)]
        for t in ts:
            t.start()
        time.sleep(0.7)
        t0 = time.time()
        rc = d.stop()
        took = time.time() - t0
        stop.append(True)
        for t in ts:
            t.join(15)
        assert rc == 0, 'exit status %r after SIGTERM under load (%.1fs)' \
            % (rc, took)
        d.start()
        c = d.client()
        s = c.session.login_with_password('root', d.password)
        lost = []
        for i in range(N_THREADS):
            oc = c.VM.get_other_config(s, vms[i])
            lost += ['%d:%d' % (i, j) for j in acked[i]
                     if oc.get('term-%d' % j) != str(j)]
        assert sum(len(a) for a in acked) > 0, 'nothing acknowledged'
        assert not lost, 'lost %d acknowledged writes: %s' % (len(lost),
                                                              lost[:10])

finally:
    finish_daemon(d)
    d.cleanup()
tap.finish()
