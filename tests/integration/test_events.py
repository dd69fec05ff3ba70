#!/usr/bin/env python3
"""test_events.py — the XenAPI event system as clients see it: event.from
long polls the way Xen Orchestra drives them (login, event.from(["*"], "",
30), then loop with the returned token), collapsing of repeated changes,
deletions with their last snapshot, class filters ("*", "vm", "VM",
"vm/<ref>"), timeouts, wake-up latency, the event.inject barrier,
event.get_current_id, the errors for bad tokens and subscriptions, the
legacy event.register/next/unregister with EVENTS_LOST, 50 concurrent
watchers, task events from Async calls, and what happens to waiting calls
when their session ends or the daemon stops.  Uses the harness in
xapitest.py; xapi/events.c is the implementation."""
import queue
import threading
import time

from xapitest import (Daemon, XenAPIError, expect_error, finish_daemon,
                      full_record, load_idl, start_or_bail, tap)

model = load_idl()
d = start_or_bail(Daemon(tls=False))
c = d.client()
S = {}


def login(client=None):
    return d.login(client or c)


def efrom(client, session, classes, token, timeout):
    # "from" is a Python keyword: call the method by its full name.
    return client.call('event.from', session, classes, token, float(timeout))


def make_network(client, session, name):
    return client.network.create(session, full_record(model, 'network',
                                                      name_label=name))


def current_token(client, session, classes=('*',)):
    """A token for "now", without waiting."""
    return efrom(client, session, list(classes), '', 0)['token']


def events_for(batch, ref):
    return [e for e in batch['events'] if e['ref'] == ref]


try:
    S['s'] = login()
    S['w'] = d.client()             # the writer: its own connection
    S['ws'] = login(S['w'])
    w, ws, s = S['w'], S['ws'], S['s']

    # ---- the first call ----

    @tap.test('test_from_empty_token_returns_every_object_as_add')
    def _():
        b = efrom(c, s, ['*'], '', 30)
        assert set(b) == {'events', 'valid_ref_counts', 'token'}, sorted(b)
        ops = {e['operation'] for e in b['events']}
        assert ops == {'add'}, ops
        refs = {(e['class'], e['ref']) for e in b['events']}
        for vm in c.VM.get_all(s):
            assert ('vm', vm) in refs, 'VM %s missing' % vm
        for h in c.host.get_all(s):
            assert ('host', h) in refs, 'host %s missing' % h
        assert ('pool', c.pool.get_all(s)[0]) in refs
        assert ('session', s) in refs, 'own session missing'
        vrc = b['valid_ref_counts']
        assert int(vrc['vm']) == len(c.VM.get_all(s)), vrc
        assert int(vrc['host']) == len(c.host.get_all(s)), vrc
        assert isinstance(b['token'], str) and b['token'], b['token']

    @tap.test('test_event_record_has_the_fields_of_the_event_class')
    def _():
        b = efrom(c, s, ['vm'], '', 0)
        e = b['events'][0]
        assert set(e) == {'id', 'timestamp', 'class', 'operation', 'ref',
                          'obj_uuid', 'snapshot'}, sorted(e)
        assert e['class'] == 'vm' and int(e['id']) >= 0
        assert e['snapshot'] == c.VM.get_record(s, e['ref'])
        assert e['obj_uuid'] == e['snapshot']['uuid']

    S['old_token'] = current_token(c, s)

    @tap.test('test_get_current_id_is_the_generation_and_grows')
    def _():
        a = int(c.event.get_current_id(s))
        net = make_network(w, ws, 'gen')
        b = int(c.event.get_current_id(s))
        assert b > a, (a, b)
        w.network.destroy(ws, net)

    # ---- a Xen Orchestra-style loop ----

    @tap.test('test_xo_style_loop_sees_every_change_once_in_order')
    def _():
        # The writer makes one change, waits until the watcher reported it,
        # and goes on: every change must arrive exactly once, in order.
        token = efrom(c, s, ['*'], '', 30)['token']
        seen = queue.Queue()
        stop = threading.Event()
        wc = d.client()
        errors = []

        def watcher():
            tok = token
            try:
                while not stop.is_set():
                    b = efrom(wc, s, ['*'], tok, 30)
                    tok = b['token']
                    for e in b['events']:
                        seen.put(e)
            except Exception as ex:
                errors.append(ex)

        th = threading.Thread(target=watcher, daemon=True)
        th.start()
        vm = c.VM.get_all(s)[0]
        old_vm_name = c.VM.get_name_label(s, vm)
        expected = []

        def wait_for(ref, op, pred=lambda e: True):
            deadline = time.time() + 10
            while time.time() < deadline:
                try:
                    e = seen.get(timeout=deadline - time.time())
                except queue.Empty:
                    break
                if e['ref'] == ref:
                    assert e['operation'] == op and pred(e), \
                        'expected %s of %s, got %s %r' % (
                            op, ref, e['operation'],
                            e['snapshot'].get('name_label'))
                    return e
            raise AssertionError('no %s event for %s' % (op, ref))

        net = make_network(w, ws, 'xo-0')
        got = [wait_for(net, 'add', lambda e: e['snapshot']['name_label'] == 'xo-0')]
        for i in range(1, 4):
            w.network.set_name_label(ws, net, 'xo-%d' % i)
            got.append(wait_for(net, 'mod', lambda e, i=i:
                                e['snapshot']['name_label'] == 'xo-%d' % i))
        w.VM.set_name_label(ws, vm, 'renamed-by-xo-test')
        got.append(wait_for(vm, 'mod', lambda e:
                            e['snapshot']['name_label'] == 'renamed-by-xo-test'))
        w.network.destroy(ws, net)
        got.append(wait_for(net, 'del', lambda e:
                            e['snapshot']['name_label'] == 'xo-3'))
        w.VM.set_name_label(ws, vm, old_vm_name)
        wait_for(vm, 'mod')
        stop.set()
        w.event.inject(ws, 'pool', w.pool.get_all(ws)[0])   # wakes it
        th.join(10)
        assert not errors, errors
        ids = [int(e['id']) for e in got]
        assert ids == sorted(ids) and len(set(ids)) == len(ids), ids
        # Nothing was reported twice.
        rest = []
        while not seen.empty():
            rest.append(seen.get())
        dup = [e for e in rest if e['ref'] in (net, vm)
               and int(e['id']) <= ids[-1]]
        assert not dup, dup

    # ---- collapsing and deletions ----

    @tap.test('test_repeated_changes_collapse_into_one_event_with_the_latest_snapshot')
    def _():
        net = make_network(w, ws, 'c0')
        token = current_token(c, s)
        for i in range(1, 6):
            w.network.set_name_label(ws, net, 'c%d' % i)
        b = efrom(c, s, ['network'], token, 5)
        evs = events_for(b, net)
        assert len(evs) == 1, evs
        assert evs[0]['operation'] == 'mod'
        assert evs[0]['snapshot']['name_label'] == 'c5'
        w.network.destroy(ws, net)

    @tap.test('test_create_then_modify_collapses_into_add')
    def _():
        token = current_token(c, s)
        net = make_network(w, ws, 'a0')
        w.network.set_name_label(ws, net, 'a1')
        evs = events_for(efrom(c, s, ['network'], token, 5), net)
        assert [(e['operation'], e['snapshot']['name_label'])
                for e in evs] == [('add', 'a1')], evs
        w.network.destroy(ws, net)

    @tap.test('test_deletion_is_delivered_with_the_last_snapshot')
    def _():
        net = make_network(w, ws, 'd0')
        w.network.set_name_label(ws, net, 'last-name')
        token = current_token(c, s)
        w.network.destroy(ws, net)
        evs = events_for(efrom(c, s, ['network'], token, 5), net)
        assert len(evs) == 1 and evs[0]['operation'] == 'del', evs
        assert evs[0]['snapshot']['name_label'] == 'last-name', evs[0]
        assert evs[0]['snapshot']['uuid'] == evs[0]['obj_uuid']

    @tap.test('test_object_created_and_deleted_between_calls_is_not_reported')
    def _():
        token = current_token(c, s)
        net = make_network(w, ws, 'ephemeral')
        w.network.destroy(ws, net)
        b = efrom(c, s, ['network'], token, 0)
        assert not events_for(b, net), b['events']

    # ---- filters ----

    @tap.test('test_class_filter_in_any_case_reports_lower_case_class')
    def _():
        vm = c.VM.get_all(s)[0]
        name = c.VM.get_name_label(s, vm)
        for sub in (['vm'], ['VM'], ['Vm']):
            token = current_token(c, s)
            net = make_network(w, ws, 'filter')
            w.VM.set_name_label(ws, vm, name + '-x')
            b = efrom(c, s, sub, token, 5)
            classes = {e['class'] for e in b['events']}
            assert classes == {'vm'}, (sub, classes)
            assert set(b['valid_ref_counts']) == {'vm'}, b['valid_ref_counts']
            w.VM.set_name_label(ws, vm, name)
            w.network.destroy(ws, net)

    @tap.test('test_object_filter_reports_only_that_object')
    def _():
        n1 = make_network(w, ws, 'only-1')
        n2 = make_network(w, ws, 'only-2')
        token = current_token(c, s)
        w.network.set_name_label(ws, n2, 'only-2b')
        w.network.set_name_label(ws, n1, 'only-1b')
        b = efrom(c, s, ['network/' + n1], token, 5)
        assert [e['ref'] for e in b['events']] == [n1], b['events']
        b = efrom(c, s, ['NETWORK/' + n2], token, 5)
        assert [e['ref'] for e in b['events']] == [n2], b['events']
        b = efrom(c, s, ['network/' + n1], '', 0)
        assert [(e['ref'], e['operation']) for e in b['events']] == \
            [(n1, 'add')], b['events']
        w.network.destroy(ws, n1)
        w.network.destroy(ws, n2)

    # ---- waiting ----

    @tap.test('test_timeout_returns_empty_events_and_a_new_token_quickly')
    def _():
        token = current_token(c, s, ['vm'])
        t0 = time.time()
        b = efrom(c, s, ['vm'], token, 1)
        took = time.time() - t0
        assert b['events'] == [], b['events']
        assert b['token'] >= token
        assert 0.8 <= took < 3, 'took %.2fs' % took

    @tap.test('test_zero_timeout_returns_at_once')
    def _():
        token = current_token(c, s, ['vm'])
        t0 = time.time()
        b = efrom(c, s, ['vm'], token, 0)
        assert b['events'] == [] and time.time() - t0 < 1

    @tap.test('test_waiting_call_is_woken_by_a_change')
    def _():
        net = make_network(w, ws, 'wake')
        token = current_token(c, s)
        res = {}
        wc = d.client()

        def wait():
            res['b'] = efrom(wc, s, ['network'], token, 20)
            res['t'] = time.time()

        th = threading.Thread(target=wait)
        th.start()
        time.sleep(0.5)
        t0 = time.time()
        w.network.set_name_label(ws, net, 'woken')
        th.join(20)
        assert 'b' in res, 'no answer'
        lat = res['t'] - t0
        evs = events_for(res['b'], net)
        assert evs and evs[0]['snapshot']['name_label'] == 'woken', res['b']
        assert lat < 0.5, 'latency %.3fs' % lat
        w.network.destroy(ws, net)

    @tap.test('test_filtered_waiter_is_not_woken_by_other_classes')
    def _():
        token = current_token(c, s, ['secret'])
        net = None
        res = {}
        wc = d.client()
        th = threading.Thread(target=lambda: res.update(
            b=efrom(wc, s, ['secret'], token, 1.5)))
        th.start()
        time.sleep(0.2)
        net = make_network(w, ws, 'not-a-secret')
        th.join(10)
        assert res['b']['events'] == [], res['b']['events']
        w.network.destroy(ws, net)

    # ---- inject, errors ----

    @tap.test('test_inject_is_a_barrier_for_event_from')
    def _():
        net = make_network(w, ws, 'inject')
        token = current_token(c, s)
        barrier = c.event.inject(s, 'network', net)
        # The barrier is the token just before the injected change.
        assert isinstance(barrier, str) and barrier >= token, (barrier, token)
        seen = []
        deadline = time.time() + 10
        while token <= barrier and time.time() < deadline:
            b = efrom(c, s, ['network'], token, 5)
            seen += events_for(b, net)
            token = b['token']
        assert token > barrier, (token, barrier)
        assert [e['operation'] for e in seen] == ['mod'], seen
        assert seen[0]['snapshot']['name_label'] == 'inject'
        assert w.network.get_name_label(ws, net) == 'inject'
        w.network.destroy(ws, net)

    @tap.test('test_inject_class_name_is_case_insensitive')
    def _():
        vm = c.VM.get_all(s)[0]
        assert c.event.inject(s, 'VM', vm) < c.event.inject(s, 'vm', vm)

    @tap.test('test_inject_unknown_object_is_HANDLE_INVALID')
    def _():
        expect_error(lambda: c.event.inject(s, 'network', 'OpaqueRef:nope'),
                     'HANDLE_INVALID', ['network', 'OpaqueRef:nope'])
        expect_error(lambda: c.event.inject(s, 'nosuchclass', 'OpaqueRef:x'),
                     'HANDLE_INVALID', ['nosuchclass', 'OpaqueRef:x'])

    @tap.test('test_malformed_token_is_EVENT_FROM_TOKEN_PARSE_FAILURE')
    def _():
        for tok in ('garbage', '12x', '-1', '1,', ',abc', '1,a-b',
                    '123456789012345678901234'):
            expect_error(lambda: efrom(c, s, ['*'], tok, 0),
                         'EVENT_FROM_TOKEN_PARSE_FAILURE', [tok], what=tok)

    @tap.test('test_malformed_subscription_is_EVENT_SUBSCRIPTION_PARSE_FAILURE')
    def _():
        for sub in ('vm/', '', '/OpaqueRef:x', 'no such class', 'vm!'):
            expect_error(lambda: efrom(c, s, ['vm', sub], '', 0),
                         'EVENT_SUBSCRIPTION_PARSE_FAILURE', [sub], what=sub)
        expect_error(lambda: c.event.register(s, ['bad class']),
                     'EVENT_SUBSCRIPTION_PARSE_FAILURE', ['bad class'])

    @tap.test('test_unknown_class_is_accepted_and_matches_nothing')
    def _():
        # As XenAPI: a client's fixed list of classes may name one this
        # toolstack lacks; the call still serves the others.
        b = efrom(c, s, ['nosuchclass', 'pool', 'nosuchclass/OpaqueRef:x'],
                  '', 0)
        assert {e['class'] for e in b['events']} == {'pool'}, b['events']
        assert set(b['valid_ref_counts']) == {'pool'}, b['valid_ref_counts']

    @tap.test('test_token_of_another_daemon_or_before_the_history_is_EVENTS_LOST')
    def _():
        good = current_token(c, s)
        gen = good.split(',')[0]
        expect_error(lambda: efrom(c, s, ['*'], gen + ',0123abcd', 0),
                     'EVENTS_LOST', [])
        expect_error(lambda: efrom(c, s, ['*'], '1', 0), 'EVENTS_LOST', [])
        # The generation alone is accepted.
        assert efrom(c, s, ['*'], gen, 0)['token']

    # ---- tasks ----

    @tap.test('test_async_call_produces_task_events')
    def _():
        token = current_token(c, s, ['task'])
        task = w.Async.network.create(ws, full_record(model, 'network',
                                                      name_label='async'))
        ops, status = [], None
        deadline = time.time() + 10
        while status != 'success' and time.time() < deadline:
            b = efrom(c, s, ['task'], token, 5)
            token = b['token']
            for e in events_for(b, task):
                ops.append(e['operation'])
                status = e['snapshot']['status']
        assert status == 'success', (ops, status)
        assert ops[0] == 'add' and set(ops[1:]) <= {'mod'}, ops
        net = w.task.get_result(ws, task)
        assert 'OpaqueRef:' in net
        w.task.destroy(ws, task)
        b = efrom(c, s, ['task'], token, 5)
        assert [e['operation'] for e in events_for(b, task)] == ['del']
        for n in w.network.get_by_name_label(ws, 'async'):
            w.network.destroy(ws, n)

    # ---- legacy register / next ----

    @tap.test('test_next_without_register_is_SESSION_NOT_REGISTERED')
    def _():
        s2 = login()
        expect_error(lambda: c.event.next(s2), 'SESSION_NOT_REGISTERED', [s2])

    @tap.test('test_register_next_unregister')
    def _():
        lc = d.client()
        ls = login(lc)
        lc.event.register(ls, ['network'])
        net = make_network(w, ws, 'legacy')
        w.network.set_name_label(ws, net, 'legacy-2')
        w.event.inject(ws, 'pool', w.pool.get_all(ws)[0])  # not subscribed
        got = lc.event.next(ls)
        assert {e['class'] for e in got} == {'network'}, got
        evs = [e for e in got if e['ref'] == net]
        # Legacy events are not collapsed: one per change.
        assert [e['operation'] for e in evs] == ['add', 'mod'], evs
        assert evs[1]['snapshot']['name_label'] == 'legacy-2'
        assert int(evs[0]['id']) < int(evs[1]['id'])
        # event.next blocks until something happens.
        res = {}
        lc2 = d.client()
        th = threading.Thread(target=lambda: res.update(n=lc2.event.next(ls)))
        th.start()
        time.sleep(0.3)
        assert 'n' not in res, res
        w.network.destroy(ws, net)
        th.join(10)
        assert [(e['operation'], e['ref']) for e in res['n']] == \
            [('del', net)], res['n']
        lc.event.unregister(ls, ['network'])
        net2 = make_network(w, ws, 'legacy-unreg')
        th = threading.Thread(target=lambda: res.update(m=lc2.event.next(ls)),
                              daemon=True)
        th.start()
        th.join(0.5)
        assert 'm' not in res, res
        lc.event.register(ls, ['VM'])
        vm = w.VM.get_all(ws)[0]
        w.VM.set_name_label(ws, vm, w.VM.get_name_label(ws, vm) + '!')
        th.join(10)
        assert res.get('m') and {e['class'] for e in res['m']} == {'vm'}, res
        w.VM.set_name_label(ws, vm, w.VM.get_name_label(ws, vm)[:-1])
        w.network.destroy(ws, net2)

    @tap.test('test_next_reports_EVENTS_LOST_when_the_client_falls_behind')
    def _():
        lc = d.client()
        ls = login(lc)
        lc.event.register(ls, ['*'])
        pool = w.pool.get_all(ws)[0]
        # More changes than the ring keeps (1024), from a few writers.
        def burst(n):
            wc = d.client()
            wsx = login(wc)
            for _ in range(n):
                wc.event.inject(wsx, 'pool', pool)
        ths = [threading.Thread(target=burst, args=(300,)) for _ in range(4)]
        for t in ths:
            t.start()
        for t in ths:
            t.join()
        expect_error(lambda: lc.event.next(ls), 'EVENTS_LOST', [])
        # The subscription starts again from the present.
        w.event.inject(ws, 'pool', pool)
        evs = lc.event.next(ls)
        assert evs and evs[-1]['ref'] == pool, evs

    # ---- many watchers ----

    @tap.test('test_50_concurrent_watchers_all_get_every_event')
    def _():
        n_watchers, n_objects = 50, 10
        token = current_token(c, s, ['network'])
        results = [None] * n_watchers
        ready = threading.Barrier(n_watchers + 1)

        def watcher(i):
            wc = d.client()
            wsx = login(wc)
            got, tok = set(), token
            ready.wait()
            deadline = time.time() + 20
            try:
                while len(got) < n_objects and time.time() < deadline:
                    b = efrom(wc, wsx, ['network'], tok, 10)
                    tok = b['token']
                    for e in b['events']:
                        if e['snapshot']['name_label'].startswith('many-'):
                            assert e['operation'] == 'add', e
                            got.add(e['ref'])
                results[i] = got
            except Exception as ex:
                results[i] = ex

        ths = [threading.Thread(target=watcher, args=(i,), daemon=True)
               for i in range(n_watchers)]
        for t in ths:
            t.start()
        ready.wait()
        time.sleep(0.3)
        nets = [make_network(w, ws, 'many-%d' % i) for i in range(n_objects)]
        for t in ths:
            t.join(30)
        bad = [(i, r) for i, r in enumerate(results) if r != set(nets)]
        for n in nets:
            w.network.destroy(ws, n)
        assert not bad, 'watchers missing events: %r' % bad[:3]

    @tap.test('test_watcher_mirrors_equal_the_database_under_concurrent_writes')
    def _():
        import random
        stop = threading.Event()
        errors = []

        def writer(seed):
            rnd = random.Random(seed)
            wc = d.client()
            wsx = login(wc)
            mine = []
            try:
                while not stop.is_set():
                    r = rnd.random()
                    if r < 0.4 or not mine:
                        mine.append(make_network(wc, wsx, 'mirror-%d' % seed))
                    elif r < 0.8:
                        wc.network.set_name_label(wsx, rnd.choice(mine),
                                                  'mirror-%f' % rnd.random())
                    else:
                        wc.network.destroy(wsx, mine.pop(
                            rnd.randrange(len(mine))))
            except Exception as ex:
                errors.append('writer: %r' % ex)

        def watcher(i, out):
            wc = d.client()
            wsx = login(wc)
            mirror, tok = {}, ''
            try:
                while True:
                    b = efrom(wc, wsx, ['network'], tok, 5)
                    tok = b['token']
                    for e in b['events']:
                        ref, op = e['ref'], e['operation']
                        if op == 'add' and ref in mirror:
                            errors.append('%d: add of known %s' % (i, ref))
                        if op in ('mod', 'del') and ref not in mirror:
                            errors.append('%d: %s of unknown %s' % (i, op, ref))
                        if op == 'del':
                            mirror.pop(ref, None)
                        else:
                            mirror[ref] = e['snapshot']['name_label']
                    if S.get('mirror_barrier') and tok > S['mirror_barrier']:
                        break
            except Exception as ex:
                errors.append('watcher %d: %r' % (i, ex))
            out.append(mirror)

        mirrors = [[] for _ in range(5)]
        wts = [threading.Thread(target=watcher, args=(i, mirrors[i]))
               for i in range(5)]
        for t in wts:
            t.start()
        writers = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
        for t in writers:
            t.start()
        time.sleep(2.5)
        stop.set()
        for t in writers:
            t.join(10)
        # A barrier the watchers see: they stop once their token passed it.
        bnet = make_network(w, ws, 'mirror-barrier')
        S['mirror_barrier'] = w.event.inject(ws, 'network', bnet)
        w.event.inject(ws, 'network', bnet)     # wakes them past it
        for t in wts:
            t.join(15)
        want = {r: rec['name_label']
                for r, rec in w.network.get_all_records(ws).items()}
        assert not errors, errors[:5]
        for i, m in enumerate(mirrors):
            assert m and m[0] == want, 'watcher %d differs: %d vs %d objects' \
                % (i, len(m[0]) if m else -1, len(want))
        for r in want:
            w.network.destroy(ws, r)

    # ---- sessions ending, JSON-RPC ----

    @tap.test('test_logout_answers_waiting_calls_with_SESSION_INVALID')
    def _():
        lc, lc2, lc3 = d.client(), d.client(), d.client()
        ls = login(lc)
        lc.event.register(ls, ['secret'])
        token = current_token(lc, ls, ['secret'])
        res = {}

        def call(key, fn):
            try:
                res[key] = fn()
            except XenAPIError as e:
                res[key] = e.details

        t1 = threading.Thread(target=call, args=(
            'from', lambda: efrom(lc2, ls, ['secret'], token, 30)))
        t2 = threading.Thread(target=call, args=(
            'next', lambda: lc3.event.next(ls)))
        t1.start()
        t2.start()
        time.sleep(0.5)
        t0 = time.time()
        lc.session.logout(ls)
        t1.join(10)
        t2.join(10)
        assert res.get('from') == ['SESSION_INVALID', ls], res
        assert res.get('next') == ['SESSION_INVALID', ls], res
        assert time.time() - t0 < 5

    @tap.test('test_session_expiry_answers_waiting_calls_with_SESSION_INVALID')
    def _():
        # A daemon whose sessions expire after one idle second; the sweep
        # runs every half second.
        d2 = Daemon(tls=False, extra_args=['--session-idle-timeout', '1'])
        try:
            d2.start()
            c2 = d2.client()
            s2 = d2.login(c2)
            c2.event.register(s2, ['secret'])
            token = current_token(c2, s2, ['secret'])
            res = {}

            def call(key, fn):
                try:
                    res[key] = fn()
                except XenAPIError as e:
                    res[key] = e.details

            t1 = threading.Thread(target=call, args=(
                'from', lambda: efrom(d2.client(), s2, ['secret'], token, 20)))
            t2 = threading.Thread(target=call, args=(
                'next', lambda: d2.client().event.next(s2)))
            t0 = time.time()
            t1.start()
            t2.start()
            t1.join(15)
            t2.join(15)
            assert res.get('from') == ['SESSION_INVALID', s2], res
            assert res.get('next') == ['SESSION_INVALID', s2], res
            assert time.time() - t0 < 10, time.time() - t0
            rc = d2.stop()
            assert rc == 0, rc
            reports = d2.sanitizer_reports()
            assert not reports, reports[0]
        finally:
            d2.cleanup()

    @tap.test('test_event_from_over_jsonrpc')
    def _():
        # An integer timeout, as Xen Orchestra sends it.
        r = d.jsonrpc('event.from', [s, ['pool'], '', 0]).json()
        b = r['result']
        assert [e['class'] for e in b['events']] == ['pool'], b
        assert b['valid_ref_counts'] == {'pool': 1}, b['valid_ref_counts']

    # ---- shutdown with waiters ----

    @tap.test('test_from_empty_token_after_restart_returns_loaded_objects')
    def _():
        net = make_network(w, ws, 'persisted')
        d.restart()
        c2 = d.client()
        s2 = login(c2)
        b = efrom(c2, s2, ['network', 'vm'], '', 0)
        got = {(e['class'], e['ref'], e['operation']) for e in b['events']}
        assert ('network', net, 'add') in got, got
        assert {k for k, _, _ in got} == {'network', 'vm'}, got
        assert int(b['valid_ref_counts']['vm']) == len(c2.VM.get_all(s2))
        # Changes to loaded rows are "mod", their deletion "del".
        token = b['token']
        c2.network.set_name_label(s2, net, 'persisted-2')
        evs = events_for(efrom(c2, s2, ['network'], token, 5), net)
        assert [e['operation'] for e in evs] == ['mod'], evs
        token = current_token(c2, s2)
        c2.network.destroy(s2, net)
        evs = events_for(efrom(c2, s2, ['network'], token, 5), net)
        assert [(e['operation'], e['snapshot']['name_label'])
                for e in evs] == [('del', 'persisted-2')], evs
        # A token of the previous run cannot be served exactly.
        expect_error(lambda: efrom(c2, s2, ['*'], S['old_token'], 0),
                     'EVENTS_LOST', [])
        S['c'], S['s'] = c2, s2

    @tap.test('test_daemon_stops_cleanly_with_calls_waiting')
    def _():
        lc = d.client()
        ls = login(lc)
        lc.event.register(ls, ['secret'])
        token = current_token(lc, ls, ['secret'])

        def quietly(fn):
            # The server closes these connections when it stops.
            try:
                fn()
            except Exception:
                pass

        for i in range(5):
            wc = d.client()
            threading.Thread(target=quietly, args=(lambda wc=wc: efrom(
                wc, ls, ['secret'], token, 60),), daemon=True).start()
        wc = d.client()
        threading.Thread(target=quietly, args=(lambda: wc.event.next(ls),),
                         daemon=True).start()
        time.sleep(0.5)
        # finish_daemon below stops it and checks the exit and the log.

finally:
    finish_daemon(d)
    d.cleanup()
    tap.finish()
