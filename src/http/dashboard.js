(function () {
  var last = null;
  function fmtBytes(n) {
    var u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'], i = 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return n.toFixed(i ? 1 : 0) + ' ' + u[i];
  }
  function text(id, v) { document.getElementById(id).textContent = v; }
  function cell(tr, v) { var td = document.createElement('td'); td.textContent = v; tr.appendChild(td); }
  function refresh() {
    Promise.all([fetch('/api/status').then(function (r) { return r.json(); }),
                 fetch('/api/topics').then(function (r) { return r.json(); }),
                 fetch('/api/groups').then(function (r) { return r.json(); })])
      .then(function (res) {
        var s = res[0], t = res[1], now = Date.now();
        text('err', '');
        text('version', s.version);
        text('topics', s.topics);
        text('partitions', s.partitions);
        text('connections', s.connections);
        text('records', s.records_in_total);
        text('disk', fmtBytes(s.bytes_on_disk));
        text('uptime', s.uptime_seconds + ' s');
        text('pending', s.pending_retries);
        if (last) {
          var dt = (now - last.t) / 1000;
          text('rate', dt > 0 ? Math.max(0, Math.round((s.records_in_total - last.n) / dt)) : '-');
        }
        last = { t: now, n: s.records_in_total };
        var c = s.cluster;
        document.getElementById('cluster').hidden = !c;
        if (c) {
          text('node', c.node_id);
          text('role', c.role);
          text('controller', c.controller === null ? 'none' : c.controller);
          text('roles', s.replication ? s.replication.leading + ' / ' + s.replication.following : '-');
          text('under', c.under_replicated_partitions);
          text('offline', c.offline_partitions);
          var brokers = document.getElementById('brokers');
          while (brokers.firstChild) brokers.removeChild(brokers.firstChild);
          c.brokers.forEach(function (b) {
            var tr = document.createElement('tr');
            var state = b.fenced ? 'fenced' : (b.id === c.controller ? 'controller' : 'live');
            cell(tr, b.id); cell(tr, b.kafka); cell(tr, state);
            brokers.appendChild(tr);
          });
        }
        var dlq = 0;
        t.topics.forEach(function (topic) {
          if (/\.dlq$/.test(topic.name)) {
            topic.partitions.forEach(function (p) { dlq += p.high_watermark - p.log_start_offset; });
          }
        });
        text('dlq', dlq);
        var groups = document.getElementById('groups');
        while (groups.firstChild) groups.removeChild(groups.firstChild);
        res[2].groups.forEach(function (g) {
          var tr = document.createElement('tr');
          var epoch = g.type === 'consumer' ? g.group_epoch : g.generation;
          var members = String(g.members.length);
          if (g.type === 'consumer' && g.members.length) {
            members += ' (' + g.members.map(function (m) { return m.member_epoch; }).join(', ') + ')';
          }
          cell(tr, g.group); cell(tr, g.type); cell(tr, g.state); cell(tr, epoch);
          cell(tr, members); cell(tr, g.lag);
          groups.appendChild(tr);
        });
        var rows = document.getElementById('rows');
        while (rows.firstChild) rows.removeChild(rows.firstChild);
        t.topics.forEach(function (topic) {
          var tr = document.createElement('tr');
          var hw = 0, size = 0;
          topic.partitions.forEach(function (p) { hw += p.high_watermark - p.log_start_offset; size += p.size_bytes; });
          cell(tr, topic.name); cell(tr, topic.partitions.length); cell(tr, hw); cell(tr, fmtBytes(size));
          rows.appendChild(tr);
        });
      })
      .catch(function (e) { text('err', 'refresh failed: ' + e); });
  }
  refresh();
  setInterval(refresh, 2000);
})();
