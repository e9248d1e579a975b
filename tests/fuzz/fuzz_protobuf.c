/* libFuzzer target: the protobuf reader and the topology records over
 * arbitrary stored bytes: read-modify-write of a Cell and a Database, and
 * their JSON views; a pooler's record (MultiPooler) as the roll reads its
 * role. What we write over a value must read back. */
#define MGOP_NO_MAIN
#include "../../multigres-op.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static char mem[2 * 65536 + 4096], js[8 * 65536];
  struct mgop_buf b, jb;
  struct mgop_jw w;
  struct mgop_pb_field f;
  struct mgop_topo_db d;
  struct mgop_topo_cell c;
  struct mgop_topo_pooler pl;
  size_t pos = 0, last = 0;
  int r;
  while ((r = mgop_pb_next(data, size, &pos, &f)) == 1) { /* fields tile the input */
    if (f.start != last || f.end != pos || f.end > size) __builtin_trap();
    if (f.wire == MGOP_PB_LEN && (f.p < data || f.p + f.n > data + size)) __builtin_trap();
    last = pos;
  }
  memset(&d, 0, sizeof(d));
  d.name = "postgres";
  d.fs_path = "/backups";
  d.cells[0] = "zone-a";
  d.ncells = 1;
  d.policy_name = "AT_LEAST_2";
  d.quorum_type = MGOP_QUORUM_AT_LEAST_N;
  d.required_count = 2;
  mgop_buf_init(&b, mem, sizeof(mem));
  if (mgop_topo_db_encode(&d, data, size, &b) == MGOP_OK) {
    size_t p2 = 0;
    while ((r = mgop_pb_next((const unsigned char *)b.p, b.len, &p2, &f)) == 1) {}
    if (r != 0) __builtin_trap(); /* our output always parses */
  }
  memset(&c, 0, sizeof(c));
  c.name = "zone-a";
  c.addrs[0] = "h:2379";
  c.naddrs = 1;
  mgop_buf_init(&b, mem, sizeof(mem));
  mgop_topo_cell_encode(&c, data, size, &b);
  mgop_buf_init(&jb, js, sizeof(js));
  mgop_jw_init(&w, &jb);
  mgop_topo_db_json(data, size, &w);
  mgop_buf_init(&jb, js, sizeof(js));
  mgop_jw_init(&w, &jb);
  mgop_topo_cell_json(data, size, &w);
  if (mgop_topo_pooler_parse(data, size, &pl) == MGOP_OK &&
      (strlen(pl.cell) >= sizeof(pl.cell) || strlen(pl.name) >= sizeof(pl.name)))
    __builtin_trap(); /* names fit or are "" */
  return 0;
}
