"""The catalog queries of a capture, built per server version (PostgreSQL 15 and later).

Each query reads one catalog for the whole database in one round trip; every piece of DDL text in
the results comes from the server's own deparsers and must be run under `search_path = ''` (the
capture sets it) so that names come out schema-qualified. Objects in excluded namespaces
(pg_catalog, information_schema, pg_toast, temporary schemas, pgkeep's own `pgkeep`) and objects
that belong to an extension (pg_depend deptype 'e') are left out here; the extension is captured
instead.

Version differences handled here: pg_database's locale columns (daticulocale in 15-16, datlocale
from 17; daticurules from 16), pg_collation's (colliculocale 15-16, colllocale 17+, collicurules 16+),
attstattarget/stxstattarget (-1 for "default" before 17, NULL from 17), and sequence values
(pg_get_sequence_data from 18, a UNION ALL over the sequences before).
"""
from __future__ import annotations

__all__ = ["NSP_OK", "database", "namespaces", "extensions", "collations", "types", "functions",
           "relations", "columns", "constraints", "indexes", "triggers", "policies", "rules",
           "statistics", "default_acls", "sequences", "depends", "comments", "binary_types",
           "sequence_values", "type_aliases", "type_signature", "event_triggers", "ts_dicts",
           "ts_configs", "casts", "operators", "publications", "large_objects", "fdws", "servers",
           "user_mappings", "uncaptured"]

NSP_OK = ("n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast', 'pgkeep') "
          "AND n.nspname !~ '^pg_(toast_)?temp_'")


def _not_ext(catalog: str, col: str) -> str:
    return (f"NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend e WHERE e.classid = "
            f"'pg_catalog.{catalog}'::pg_catalog.regclass AND e.objid = {col} AND e.deptype = 'e')")


def _qcoll(oid_expr: str) -> str:
    return (f"(SELECT format('%I.%I', cn.nspname, co.collname) FROM pg_catalog.pg_collation co "
            f"JOIN pg_catalog.pg_namespace cn ON cn.oid = co.collnamespace WHERE co.oid = {oid_expr})")


def database(v: int) -> str:
    locale = "d.datlocale" if v >= 170000 else "d.daticulocale"
    rules = "d.daticurules" if v >= 160000 else "NULL::text"
    return f"""
SELECT d.datname, pg_catalog.pg_encoding_to_char(d.encoding) AS encoding, d.datcollate, d.datctype,
       d.datlocprovider::text AS provider, {locale} AS locale, {rules} AS icu_rules,
       pg_catalog.pg_get_userbyid(d.datdba) AS owner,
       pg_catalog.shobj_description(d.oid, 'pg_database') AS comment,
       d.datacl::text[] AS acl, pg_catalog.acldefault('d', d.datdba)::text[] AS acl_default,
       d.datconnlimit,
       (SELECT s.setconfig FROM pg_catalog.pg_db_role_setting s
         WHERE s.setdatabase = d.oid AND s.setrole = 0) AS settings,
       (SELECT pg_catalog.json_object_agg(pg_catalog.pg_get_userbyid(s.setrole), s.setconfig)
          FROM pg_catalog.pg_db_role_setting s
         WHERE s.setdatabase = d.oid AND s.setrole <> 0)::text AS role_settings
  FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database()"""


def namespaces(v: int) -> str:
    return f"""
SELECT n.oid, n.nspname, pg_catalog.quote_ident(n.nspname) AS q,
       pg_catalog.pg_get_userbyid(n.nspowner) AS owner, n.nspacl::text[] AS acl,
       pg_catalog.acldefault('n', n.nspowner)::text[] AS acl_default,
       (SELECT ip.initprivs::text[] FROM pg_catalog.pg_init_privs ip
         WHERE ip.objoid = n.oid AND ip.classoid = 'pg_catalog.pg_namespace'::pg_catalog.regclass
           AND ip.objsubid = 0) AS initprivs
  FROM pg_catalog.pg_namespace n
 WHERE {NSP_OK} AND {_not_ext('pg_namespace', 'n.oid')}"""


def extensions(v: int) -> str:
    return """
SELECT x.oid, x.extname, x.extversion, n.nspname, pg_catalog.quote_ident(n.nspname) AS qnsp,
       pg_catalog.quote_ident(x.extname) AS q
  FROM pg_catalog.pg_extension x JOIN pg_catalog.pg_namespace n ON n.oid = x.extnamespace
 WHERE x.oid >= 16384"""


def collations(v: int) -> str:
    locale = "c.colllocale" if v >= 170000 else "c.colliculocale"
    rules = "c.collicurules" if v >= 160000 else "NULL::text"
    return f"""
SELECT c.oid, n.nspname, c.collname, format('%I.%I', n.nspname, c.collname) AS q,
       pg_catalog.pg_get_userbyid(c.collowner) AS owner, c.collprovider::text AS provider,
       c.collisdeterministic AS deterministic, c.collcollate, c.collctype,
       {locale} AS locale, {rules} AS rules
  FROM pg_catalog.pg_collation c JOIN pg_catalog.pg_namespace n ON n.oid = c.collnamespace
 WHERE {NSP_OK} AND {_not_ext('pg_collation', 'c.oid')}"""


def types(v: int) -> str:
    return f"""
SELECT t.oid, t.typtype::text AS typtype, n.nspname, t.typname,
       format('%I.%I', n.nspname, t.typname) AS q, pg_catalog.pg_get_userbyid(t.typowner) AS owner,
       t.typacl::text[] AS acl, pg_catalog.acldefault('T', t.typowner)::text[] AS acl_default,
       CASE WHEN t.typtype = 'e' THEN ARRAY(SELECT e.enumlabel FROM pg_catalog.pg_enum e
                                             WHERE e.enumtypid = t.oid ORDER BY e.enumsortorder) END AS labels,
       CASE WHEN t.typtype = 'c' THEN ARRAY(
            SELECT format('%I %s', a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod))
                   || CASE WHEN a.attcollation <> at.typcollation
                           THEN ' COLLATE ' || {_qcoll('a.attcollation')} ELSE '' END
              FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type at ON at.oid = a.atttypid
             WHERE a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped
             ORDER BY a.attnum) END AS attrs,
       t.typrelid,
       CASE WHEN t.typtype = 'd' THEN pg_catalog.format_type(t.typbasetype, t.typtypmod) END AS basetype,
       t.typnotnull, pg_catalog.pg_get_expr(t.typdefaultbin, 0) AS typdefault,
       CASE WHEN t.typtype = 'd' AND t.typcollation <> bt.typcollation
            THEN {_qcoll('t.typcollation')} END AS collation,
       CASE WHEN t.typtype = 'r' THEN pg_catalog.format_type(r.rngsubtype, NULL) END AS subtype,
       CASE WHEN t.typtype = 'r' AND NOT opc.opcdefault
            THEN format('%I.%I', opn.nspname, opc.opcname) END AS subtype_opclass,
       CASE WHEN t.typtype = 'r' AND r.rngcollation <> 0 AND r.rngcollation <> st.typcollation
            THEN {_qcoll('r.rngcollation')} END AS range_collation,
       CASE WHEN r.rngcanonical <> 0 THEN r.rngcanonical::pg_catalog.regproc::text END AS canonical,
       CASE WHEN r.rngsubdiff <> 0 THEN r.rngsubdiff::pg_catalog.regproc::text END AS subdiff,
       CASE WHEN t.typtype = 'r' THEN (SELECT format('%I.%I', mn.nspname, mt.typname)
            FROM pg_catalog.pg_type mt JOIN pg_catalog.pg_namespace mn ON mn.oid = mt.typnamespace
           WHERE mt.oid = r.rngmultitypid) END AS multirange,
       {type_signature('t.oid')} AS signature
  FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
  LEFT JOIN pg_catalog.pg_class c ON c.oid = t.typrelid
  LEFT JOIN pg_catalog.pg_type bt ON bt.oid = t.typbasetype
  LEFT JOIN pg_catalog.pg_range r ON r.rngtypid = t.oid
  LEFT JOIN pg_catalog.pg_type st ON st.oid = r.rngsubtype
  LEFT JOIN pg_catalog.pg_opclass opc ON opc.oid = r.rngsubopc
  LEFT JOIN pg_catalog.pg_namespace opn ON opn.oid = opc.opcnamespace
 WHERE {NSP_OK} AND t.typtype IN ('e', 'c', 'r', 'd') AND (t.typtype <> 'c' OR c.relkind = 'c')
   AND {_not_ext('pg_type', 't.oid')}"""


def type_signature(oid_expr: str) -> str:
    """A text that two types share when a restore may reuse one for the other: same kind and the
    same ordered enum labels, attributes, domain base type and constraints, or range subtype. Run
    at capture on the source and by the restore plan's DO block on the target."""
    return f"""(SELECT sg.typtype::text || ':' || COALESCE(CASE sg.typtype
   WHEN 'e' THEN (SELECT pg_catalog.string_agg(pg_catalog.quote_literal(e.enumlabel), ',' ORDER BY e.enumsortorder)
                    FROM pg_catalog.pg_enum e WHERE e.enumtypid = sg.oid)
   WHEN 'c' THEN (SELECT pg_catalog.string_agg(format('%I %s', a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod)), ',' ORDER BY a.attnum)
                    FROM pg_catalog.pg_attribute a WHERE a.attrelid = sg.typrelid AND a.attnum > 0 AND NOT a.attisdropped)
   WHEN 'd' THEN pg_catalog.format_type(sg.typbasetype, sg.typtypmod) || CASE WHEN sg.typnotnull THEN ' NOT NULL' ELSE '' END
                 || COALESCE((SELECT pg_catalog.string_agg(pg_catalog.pg_get_constraintdef(c.oid), ',' ORDER BY pg_catalog.pg_get_constraintdef(c.oid))
                                FROM pg_catalog.pg_constraint c WHERE c.contypid = sg.oid AND c.contype = 'c'), '')
   WHEN 'r' THEN (SELECT pg_catalog.format_type(r.rngsubtype, NULL) FROM pg_catalog.pg_range r WHERE r.rngtypid = sg.oid)
   END, '') FROM pg_catalog.pg_type sg WHERE sg.oid = {oid_expr})"""


def type_aliases(v: int) -> str:
    """Types that stand for another object in dependencies: array types (their element), a
    range's multirange, a relation's row type (the relation)."""
    return """
SELECT t.typarray AS alias, 'pg_type' AS cls, t.oid AS target FROM pg_catalog.pg_type t
 WHERE t.typarray <> 0 AND t.oid >= 16384
UNION ALL
SELECT r.rngmultitypid, 'pg_type', r.rngtypid FROM pg_catalog.pg_range r WHERE r.rngtypid >= 16384
UNION ALL
SELECT c.reltype, 'pg_class', c.oid FROM pg_catalog.pg_class c WHERE c.reltype <> 0 AND c.oid >= 16384"""


def functions(v: int) -> str:
    return f"""
SELECT p.oid, p.prokind::text AS prokind, n.nspname, p.proname,
       format('%I.%I(%s)', n.nspname, p.proname, pg_catalog.pg_get_function_identity_arguments(p.oid)) AS q,
       format('%I.%I', n.nspname, p.proname) AS qname,
       pg_catalog.pg_get_function_arguments(p.oid) AS args,
       pg_catalog.pg_get_userbyid(p.proowner) AS owner, p.proacl::text[] AS acl,
       pg_catalog.acldefault('f', p.proowner)::text[] AS acl_default,
       CASE WHEN p.prokind <> 'a' THEN pg_catalog.pg_get_functiondef(p.oid) END AS def,
       p.proparallel::text AS parallel, a.aggkind::text AS aggkind,
       CASE WHEN a.aggfnoid IS NOT NULL THEN a.aggtransfn::pg_catalog.regproc::text END AS sfunc,
       pg_catalog.format_type(a.aggtranstype, NULL) AS stype, a.aggtransspace AS sspace,
       CASE WHEN a.aggfinalfn <> 0 THEN a.aggfinalfn::pg_catalog.regproc::text END AS finalfunc,
       a.aggfinalextra AS finalfunc_extra, a.aggfinalmodify::text AS finalfunc_modify,
       CASE WHEN a.aggcombinefn <> 0 THEN a.aggcombinefn::pg_catalog.regproc::text END AS combinefunc,
       CASE WHEN a.aggserialfn <> 0 THEN a.aggserialfn::pg_catalog.regproc::text END AS serialfunc,
       CASE WHEN a.aggdeserialfn <> 0 THEN a.aggdeserialfn::pg_catalog.regproc::text END AS deserialfunc,
       a.agginitval AS initcond,
       CASE WHEN a.aggmtransfn <> 0 THEN a.aggmtransfn::pg_catalog.regproc::text END AS msfunc,
       CASE WHEN a.aggminvtransfn <> 0 THEN a.aggminvtransfn::pg_catalog.regproc::text END AS minvfunc,
       CASE WHEN a.aggmtransfn <> 0 THEN pg_catalog.format_type(a.aggmtranstype, NULL) END AS mstype,
       a.aggmtransspace AS msspace,
       CASE WHEN a.aggmfinalfn <> 0 THEN a.aggmfinalfn::pg_catalog.regproc::text END AS mfinalfunc,
       a.aggmfinalextra AS mfinalfunc_extra, a.aggmfinalmodify::text AS mfinalfunc_modify,
       a.aggminitval AS minitcond,
       CASE WHEN a.aggsortop <> 0 THEN (SELECT format('OPERATOR(%I.%s)', on_.nspname, o.oprname)
              FROM pg_catalog.pg_operator o JOIN pg_catalog.pg_namespace on_ ON on_.oid = o.oprnamespace
             WHERE o.oid = a.aggsortop) END AS sortop
  FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
  LEFT JOIN pg_catalog.pg_aggregate a ON a.aggfnoid = p.oid
 WHERE {NSP_OK} AND {_not_ext('pg_proc', 'p.oid')}
   AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend i WHERE i.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass
                      AND i.objid = p.oid AND i.deptype = 'i')   -- a range's constructors"""


def relations(v: int) -> str:
    return f"""
SELECT c.oid, c.relkind::text AS relkind, n.nspname, c.relname,
       format('%I.%I', n.nspname, c.relname) AS q, pg_catalog.pg_get_userbyid(c.relowner) AS owner,
       c.relacl::text[] AS acl,
       pg_catalog.acldefault(CASE WHEN c.relkind = 'S' THEN 's' ELSE 'r' END::"char", c.relowner)::text[] AS acl_default,
       c.relpersistence::text AS persistence, c.relispartition, c.reloptions,
       (SELECT tc.reloptions FROM pg_catalog.pg_class tc WHERE tc.oid = c.reltoastrelid) AS toast_options,
       c.relreplident::text AS replident, c.relrowsecurity, c.relforcerowsecurity, c.relpages,
       c.reltuples, am.amname, c.relispopulated,
       CASE WHEN c.relispartition THEN pg_catalog.pg_get_expr(c.relpartbound, c.oid) END AS partbound,
       CASE WHEN c.relkind = 'p' THEN pg_catalog.pg_get_partkeydef(c.oid) END AS partkey,
       CASE WHEN c.relkind IN ('v', 'm') THEN pg_catalog.pg_get_viewdef(c.oid) END AS viewdef,
       ARRAY(SELECT i.inhparent FROM pg_catalog.pg_inherits i WHERE i.inhrelid = c.oid
              ORDER BY i.inhseqno) AS parents,
       CASE WHEN c.reloftype <> 0 THEN c.reloftype::pg_catalog.regtype::text END AS of_type,
       pg_catalog.quote_ident(fs.srvname) AS ftserver, ft.ftoptions
  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN pg_catalog.pg_am am ON am.oid = c.relam
  LEFT JOIN pg_catalog.pg_foreign_table ft ON ft.ftrelid = c.oid
  LEFT JOIN pg_catalog.pg_foreign_server fs ON fs.oid = ft.ftserver
 WHERE {NSP_OK} AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND {_not_ext('pg_class', 'c.oid')}"""


def columns(v: int) -> str:
    stat = "a.attstattarget" if v >= 170000 else "NULLIF(a.attstattarget, -1)"
    return f"""
SELECT a.attrelid, a.attnum, a.attname, pg_catalog.quote_ident(a.attname) AS q,
       pg_catalog.format_type(a.atttypid, a.atttypmod) AS type, a.atttypid, a.atttypmod, a.attnotnull,
       a.attidentity::text AS identity, a.attgenerated::text AS generated, a.attislocal, a.attinhcount,
       CASE WHEN a.attcollation <> t.typcollation THEN {_qcoll('a.attcollation')} END AS collation,
       pg_catalog.pg_get_expr(d.adbin, d.adrelid) AS default, d.oid AS attrdef,
       a.attstorage::text AS storage, t.typstorage::text AS typstorage,
       a.attcompression::text AS compression, {stat} AS stattarget, a.attoptions,
       a.attacl::text[] AS acl, a.attfdwoptions,
       CASE WHEN a.atttypid = 'pg_catalog.bpchar'::pg_catalog.regtype AND a.atttypmod > 0 AND c.relkind = 'r'
            THEN (SELECT s.most_common_freqs[pg_catalog.array_position(
                             s.most_common_vals::text::pg_catalog.bpchar[], ''::pg_catalog.bpchar)]
                    FROM pg_catalog.pg_stats s
                   WHERE s.schemaname = n.nspname AND s.tablename = c.relname AND s.attname = a.attname
                     AND NOT s.inherited) END AS blank_frac
  FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
  LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
 WHERE {NSP_OK} AND c.relkind IN ('r', 'p', 'v', 'm', 'c', 'f') AND a.attnum > 0 AND NOT a.attisdropped
 ORDER BY a.attrelid, a.attnum"""


def constraints(v: int) -> str:
    enforced = "co.conenforced" if v >= 180000 else "true"
    return f"""
SELECT co.oid, co.conname, pg_catalog.quote_ident(co.conname) AS q, co.contype::text AS contype,
       co.conrelid, co.contypid, co.confrelid, co.conindid, co.conislocal, co.coninhcount,
       co.connoinherit, co.convalidated, {enforced} AS enforced, co.conparentid, co.conkey,
       pg_catalog.pg_get_constraintdef(co.oid) AS def
  FROM pg_catalog.pg_constraint co
  LEFT JOIN pg_catalog.pg_class c ON c.oid = co.conrelid
  LEFT JOIN pg_catalog.pg_type t ON t.oid = co.contypid
  JOIN pg_catalog.pg_namespace n ON n.oid = COALESCE(c.relnamespace, t.typnamespace)
 WHERE {NSP_OK} AND co.contype <> 't'"""


def indexes(v: int) -> str:
    stat = "a.attstattarget" if v >= 170000 else "NULLIF(a.attstattarget, -1)"
    return f"""
SELECT i.indexrelid, i.indrelid, ic.relname, n.nspname, format('%I.%I', n.nspname, ic.relname) AS q,
       pg_catalog.pg_get_indexdef(i.indexrelid) AS def, i.indisclustered, i.indisreplident,
       (SELECT h.inhparent FROM pg_catalog.pg_inherits h WHERE h.inhrelid = i.indexrelid) AS parent,
       (SELECT co.oid FROM pg_catalog.pg_constraint co WHERE co.conindid = i.indexrelid
           AND co.conrelid = i.indrelid AND co.contype IN ('p', 'u', 'x')) AS conoid,
       ARRAY(SELECT format('%s %s', a.attnum, {stat}) FROM pg_catalog.pg_attribute a
              WHERE a.attrelid = i.indexrelid AND {stat} IS NOT NULL ORDER BY a.attnum) AS stats
  FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
  JOIN pg_catalog.pg_class tc ON tc.oid = i.indrelid
  JOIN pg_catalog.pg_namespace n ON n.oid = tc.relnamespace
 WHERE {NSP_OK} AND tc.relkind IN ('r', 'p', 'm') AND (i.indisvalid OR tc.relkind = 'p')"""


def triggers(v: int) -> str:
    return f"""
SELECT t.oid, t.tgrelid, t.tgname, pg_catalog.quote_ident(t.tgname) AS q,
       pg_catalog.pg_get_triggerdef(t.oid) AS def, t.tgenabled::text AS enabled, t.tgparentid,
       t.tgfoid, (SELECT pt.tgenabled::text FROM pg_catalog.pg_trigger pt WHERE pt.oid = t.tgparentid) AS parent_enabled
  FROM pg_catalog.pg_trigger t JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE {NSP_OK} AND NOT t.tgisinternal"""


def policies(v: int) -> str:
    return f"""
SELECT p.oid, p.polrelid, p.polname, pg_catalog.quote_ident(p.polname) AS q, p.polpermissive,
       p.polcmd::text AS cmd,
       ARRAY(SELECT CASE WHEN r = 0 THEN '' ELSE pg_catalog.pg_get_userbyid(r) END
               FROM pg_catalog.unnest(p.polroles) r) AS roles,
       pg_catalog.pg_get_expr(p.polqual, p.polrelid) AS qual,
       pg_catalog.pg_get_expr(p.polwithcheck, p.polrelid) AS withcheck
  FROM pg_catalog.pg_policy p JOIN pg_catalog.pg_class c ON c.oid = p.polrelid
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE {NSP_OK}"""


def rules(v: int) -> str:
    return f"""
SELECT r.oid, r.ev_class, r.rulename, pg_catalog.quote_ident(r.rulename) AS q,
       CASE WHEN r.rulename <> '_RETURN' THEN pg_catalog.pg_get_ruledef(r.oid) END AS def,
       r.ev_enabled::text AS enabled
  FROM pg_catalog.pg_rewrite r JOIN pg_catalog.pg_class c ON c.oid = r.ev_class
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE {NSP_OK}"""


def statistics(v: int) -> str:
    stat = "s.stxstattarget" if v >= 170000 else "NULLIF(s.stxstattarget, -1)"
    return f"""
SELECT s.oid, s.stxrelid, n.nspname, s.stxname, format('%I.%I', n.nspname, s.stxname) AS q,
       pg_catalog.pg_get_statisticsobjdef(s.oid) AS def, {stat} AS stattarget,
       pg_catalog.pg_get_userbyid(s.stxowner) AS owner
  FROM pg_catalog.pg_statistic_ext s JOIN pg_catalog.pg_namespace n ON n.oid = s.stxnamespace
 WHERE {NSP_OK}"""


def default_acls(v: int) -> str:
    return """
SELECT d.oid, pg_catalog.pg_get_userbyid(d.defaclrole) AS role, n.nspname,
       d.defaclobjtype::text AS objtype, d.defaclacl::text[] AS acl,
       CASE WHEN d.defaclnamespace = 0 THEN pg_catalog.acldefault(
            CASE d.defaclobjtype WHEN 'S' THEN 's' ELSE d.defaclobjtype END::"char",
            d.defaclrole)::text[] ELSE '{}'::text[] END AS acl_default
  FROM pg_catalog.pg_default_acl d LEFT JOIN pg_catalog.pg_namespace n ON n.oid = d.defaclnamespace"""


def event_triggers(v: int) -> str:
    return f"""
SELECT et.oid, et.evtname, pg_catalog.quote_ident(et.evtname) AS q, et.evtevent,
       pg_catalog.pg_get_userbyid(et.evtowner) AS owner, et.evtenabled::text AS enabled,
       et.evttags, format('%I.%I', n.nspname, p.proname) AS function
  FROM pg_catalog.pg_event_trigger et JOIN pg_catalog.pg_proc p ON p.oid = et.evtfoid
  JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
 WHERE {_not_ext('pg_event_trigger', 'et.oid')}"""


def ts_dicts(v: int) -> str:
    return f"""
SELECT d.oid, n.nspname, d.dictname, format('%I.%I', n.nspname, d.dictname) AS q,
       pg_catalog.pg_get_userbyid(d.dictowner) AS owner,
       format('%I.%I', tn.nspname, t.tmplname) AS template, d.dictinitoption
  FROM pg_catalog.pg_ts_dict d JOIN pg_catalog.pg_namespace n ON n.oid = d.dictnamespace
  JOIN pg_catalog.pg_ts_template t ON t.oid = d.dicttemplate
  JOIN pg_catalog.pg_namespace tn ON tn.oid = t.tmplnamespace
 WHERE {NSP_OK} AND {_not_ext('pg_ts_dict', 'd.oid')}"""


def ts_configs(v: int) -> str:
    """Each mapping as 'token type WITH dict, dict' in the order of its dictionaries."""
    return f"""
SELECT c.oid, n.nspname, c.cfgname, format('%I.%I', n.nspname, c.cfgname) AS q,
       pg_catalog.pg_get_userbyid(c.cfgowner) AS owner,
       format('%I.%I', pn.nspname, p.prsname) AS parser,
       ARRAY(SELECT format('%s WITH %s', t.alias, pg_catalog.string_agg(
                       format('%I.%I', dn.nspname, dd.dictname), ', ' ORDER BY m.mapseqno))
               FROM pg_catalog.pg_ts_config_map m
               JOIN pg_catalog.ts_token_type(c.cfgparser) t ON t.tokid = m.maptokentype
               JOIN pg_catalog.pg_ts_dict dd ON dd.oid = m.mapdict
               JOIN pg_catalog.pg_namespace dn ON dn.oid = dd.dictnamespace
              WHERE m.mapcfg = c.oid GROUP BY t.tokid, t.alias ORDER BY t.tokid) AS mappings
  FROM pg_catalog.pg_ts_config c JOIN pg_catalog.pg_namespace n ON n.oid = c.cfgnamespace
  JOIN pg_catalog.pg_ts_parser p ON p.oid = c.cfgparser
  JOIN pg_catalog.pg_namespace pn ON pn.oid = p.prsnamespace
 WHERE {NSP_OK} AND {_not_ext('pg_ts_config', 'c.oid')}"""


def casts(v: int) -> str:
    return f"""
SELECT c.oid, pg_catalog.format_type(c.castsource, NULL) AS source,
       pg_catalog.format_type(c.casttarget, NULL) AS target,
       CASE WHEN c.castfunc <> 0 THEN c.castfunc::pg_catalog.regprocedure::text END AS func,
       NULLIF(c.castfunc, 0) AS funcoid,
       c.castcontext::text AS context, c.castmethod::text AS method
  FROM pg_catalog.pg_cast c WHERE c.oid >= 16384 AND {_not_ext('pg_cast', 'c.oid')}
   AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend i WHERE i.classid = 'pg_catalog.pg_cast'::pg_catalog.regclass
                      AND i.objid = c.oid AND i.deptype = 'i')   -- a range's casts to its multirange"""


def operators(v: int) -> str:
    def op(col: str) -> str:
        return (f"(SELECT format('OPERATOR(%I.%s)', x.n, x.o) FROM (SELECT rn.nspname AS n, r.oprname AS o "
                f"FROM pg_catalog.pg_operator r JOIN pg_catalog.pg_namespace rn ON rn.oid = r.oprnamespace "
                f"WHERE r.oid = o.{col}) x)")
    return f"""
SELECT o.oid, n.nspname, o.oprname, pg_catalog.pg_get_userbyid(o.oprowner) AS owner,
       format('%I.%s', n.nspname, o.oprname) AS qname,
       CASE WHEN o.oprleft <> 0 THEN pg_catalog.format_type(o.oprleft, NULL) END AS lefttype,
       pg_catalog.format_type(o.oprright, NULL) AS righttype, o.oprcode::text AS func,
       {op('oprcom')} AS commutator, {op('oprnegate')} AS negator,
       NULLIF(o.oprrest, 0)::pg_catalog.regproc::text AS restrict,
       NULLIF(o.oprjoin, 0)::pg_catalog.regproc::text AS join, o.oprcanhash, o.oprcanmerge
  FROM pg_catalog.pg_operator o JOIN pg_catalog.pg_namespace n ON n.oid = o.oprnamespace
 WHERE {NSP_OK} AND {_not_ext('pg_operator', 'o.oid')} AND o.oprcode <> 0"""


def publications(v: int) -> str:
    gencols = "p.pubgencols::text" if v >= 180000 else "NULL::text"
    return f"""
SELECT p.oid, p.pubname, pg_catalog.quote_ident(p.pubname) AS q,
       pg_catalog.pg_get_userbyid(p.pubowner) AS owner, p.puballtables, p.pubinsert, p.pubupdate,
       p.pubdelete, p.pubtruncate, p.pubviaroot, {gencols} AS gencols,
       ARRAY(SELECT format('%I.%I', cn.nspname, c.relname)
                    || CASE WHEN pr.prattrs IS NULL THEN '' ELSE ' (' || (
                         SELECT pg_catalog.string_agg(pg_catalog.quote_ident(a.attname), ', ' ORDER BY k.i)
                           FROM pg_catalog.unnest(pr.prattrs::int2[]) WITH ORDINALITY k(attnum, i)
                           JOIN pg_catalog.pg_attribute a ON a.attrelid = pr.prrelid AND a.attnum = k.attnum)
                         || ')' END
                    || CASE WHEN pr.prqual IS NULL THEN ''
                            ELSE ' WHERE (' || pg_catalog.pg_get_expr(pr.prqual, pr.prrelid) || ')' END
               FROM pg_catalog.pg_publication_rel pr JOIN pg_catalog.pg_class c ON c.oid = pr.prrelid
               JOIN pg_catalog.pg_namespace cn ON cn.oid = c.relnamespace
              WHERE pr.prpubid = p.oid ORDER BY 1) AS tables,
       ARRAY(SELECT pg_catalog.quote_ident(sn.nspname) FROM pg_catalog.pg_publication_namespace pn
               JOIN pg_catalog.pg_namespace sn ON sn.oid = pn.pnnspid
              WHERE pn.pnpubid = p.oid ORDER BY 1) AS schemas
  FROM pg_catalog.pg_publication p"""


def fdws(v: int) -> str:
    return f"""
SELECT w.oid, w.fdwname, pg_catalog.quote_ident(w.fdwname) AS q,
       pg_catalog.pg_get_userbyid(w.fdwowner) AS owner,
       NULLIF(w.fdwhandler, 0)::pg_catalog.regproc::text AS handler,
       NULLIF(w.fdwvalidator, 0)::pg_catalog.regproc::text AS validator, w.fdwoptions,
       w.fdwacl::text[] AS acl, pg_catalog.acldefault('F', w.fdwowner)::text[] AS acl_default
  FROM pg_catalog.pg_foreign_data_wrapper w
 WHERE w.oid >= 16384 AND {_not_ext('pg_foreign_data_wrapper', 'w.oid')}"""


def servers(v: int) -> str:
    return f"""
SELECT s.oid, s.srvname, pg_catalog.quote_ident(s.srvname) AS q,
       pg_catalog.pg_get_userbyid(s.srvowner) AS owner, pg_catalog.quote_ident(w.fdwname) AS fdw, s.srvfdw,
       s.srvtype, s.srvversion, s.srvoptions, s.srvacl::text[] AS acl,
       pg_catalog.acldefault('S', s.srvowner)::text[] AS acl_default
  FROM pg_catalog.pg_foreign_server s JOIN pg_catalog.pg_foreign_data_wrapper w ON w.oid = s.srvfdw
 WHERE {_not_ext('pg_foreign_server', 's.oid')}"""


def user_mappings(v: int) -> str:
    """From the pg_user_mappings view: its options are the ones the capturing user may see."""
    return """
SELECT m.umid AS oid, pg_catalog.quote_ident(m.srvname) AS server, m.srvid, m.umuser, m.usename,
       m.umoptions
  FROM pg_catalog.pg_user_mappings m"""


# Large objects are backed up when their pages can be read (pg_largeobject: superusers only).
_LO_READABLE = "pg_catalog.has_table_privilege('pg_catalog.pg_largeobject', 'SELECT')"


def large_objects(v: int) -> str:
    return f"""
SELECT m.oid, pg_catalog.pg_get_userbyid(m.lomowner) AS owner, m.lomacl::text[] AS acl,
       pg_catalog.acldefault('L', m.lomowner)::text[] AS acl_default,
       pg_catalog.obj_description(m.oid, 'pg_largeobject') AS comment
  FROM pg_catalog.pg_largeobject_metadata m WHERE {_LO_READABLE} ORDER BY m.oid"""


def _in_schema(label: str, catalog: str, alias: str, name_col: str, nsp_col: str) -> str:
    return f"""
SELECT '{label}', format('%I.%I', n.nspname, {alias}.{name_col})
  FROM pg_catalog.{catalog} {alias} JOIN pg_catalog.pg_namespace n ON n.oid = {alias}.{nsp_col}
 WHERE {NSP_OK} AND {_not_ext(catalog, alias + '.oid')}"""


def uncaptured(v: int) -> str:
    """(kind, name) of every object a capture leaves out, for the NOTICE and the docs: the
    kinds below have no deparser in the server and no renderer here yet. Objects of extensions
    are left out (CREATE EXTENSION brings them back), and so are the built-in ones."""
    user = "{a}.oid >= 16384 AND {ext}"
    parts = [
        """SELECT 'subscription', pg_catalog.quote_ident(s.subname) FROM pg_catalog.pg_subscription s
 WHERE s.subdbid = (SELECT d.oid FROM pg_catalog.pg_database d
                     WHERE d.datname = pg_catalog.current_database())""",
        _in_schema("operator class", "pg_opclass", "oc", "opcname", "opcnamespace"),
        _in_schema("operator family", "pg_opfamily", "of", "opfname", "opfnamespace"),
        _in_schema("text search parser", "pg_ts_parser", "tp", "prsname", "prsnamespace"),
        _in_schema("text search template", "pg_ts_template", "tt", "tmplname", "tmplnamespace"),
        _in_schema("conversion", "pg_conversion", "cv", "conname", "connamespace"),
        f"""SELECT 'transform', format('FOR %s LANGUAGE %I', pg_catalog.format_type(t.trftype, NULL), l.lanname)
  FROM pg_catalog.pg_transform t JOIN pg_catalog.pg_language l ON l.oid = t.trflang
 WHERE {user.format(a='t', ext=_not_ext('pg_transform', 't.oid'))}""",
        f"""SELECT 'access method', pg_catalog.quote_ident(a.amname) FROM pg_catalog.pg_am a
 WHERE {user.format(a='a', ext=_not_ext('pg_am', 'a.oid'))}""",
        f"""SELECT 'language', pg_catalog.quote_ident(l.lanname) FROM pg_catalog.pg_language l
 WHERE {user.format(a='l', ext=_not_ext('pg_language', 'l.oid'))}""",
        f"""SELECT 'large objects (unreadable without superuser)', count(*)::text
  FROM pg_catalog.pg_largeobject_metadata HAVING count(*) > 0 AND NOT {_LO_READABLE}""",
        f"""SELECT 'tablespace', format('%I.%I in %I', n.nspname, c.relname, t.spcname)
  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_catalog.pg_tablespace t ON t.oid = c.reltablespace
 WHERE c.relkind IN ('r', 'p', 'm', 'i', 'I') AND {NSP_OK} AND {_not_ext('pg_class', 'c.oid')}""",
        """SELECT 'tablespace', format('database default %I', t.spcname)
  FROM pg_catalog.pg_database d JOIN pg_catalog.pg_tablespace t ON t.oid = d.dattablespace
 WHERE d.datname = pg_catalog.current_database() AND t.spcname <> 'pg_default'""",
    ]
    return "SELECT kind, name FROM (" + "\nUNION ALL\n".join(parts) + ") u(kind, name) ORDER BY 1, 2"


def sequences(v: int) -> str:
    values = ("(SELECT sd.last_value FROM pg_catalog.pg_get_sequence_data(s.seqrelid) sd) AS last_value, "
              "(SELECT sd.is_called FROM pg_catalog.pg_get_sequence_data(s.seqrelid) sd) AS is_called"
              if v >= 180000 else "NULL::bigint AS last_value, NULL::boolean AS is_called")
    return f"""
SELECT s.seqrelid, pg_catalog.format_type(s.seqtypid, NULL) AS type, s.seqstart, s.seqincrement,
       s.seqmax, s.seqmin, s.seqcache, s.seqcycle, {values}
  FROM pg_catalog.pg_sequence s JOIN pg_catalog.pg_class c ON c.oid = s.seqrelid
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE {NSP_OK} AND {_not_ext('pg_class', 'c.oid')}"""


def sequence_values(oids_and_names: list[tuple[int, str]]) -> str:
    """Before 18: one UNION ALL over the sequences (still one round trip)."""
    return "\nUNION ALL ".join(f"SELECT {oid}::oid AS seqrelid, last_value, is_called FROM {q}"
                               for oid, q in oids_and_names)


def depends(v: int) -> str:
    return """
SELECT d.classid::pg_catalog.regclass::text AS cls, d.objid, d.objsubid,
       d.refclassid::pg_catalog.regclass::text AS refcls, d.refobjid, d.refobjsubid,
       d.deptype::text AS deptype
  FROM pg_catalog.pg_depend d
 WHERE d.objid >= 16384 AND d.refobjid >= 16384 AND d.deptype IN ('n', 'a', 'i', 'e')"""


def comments(v: int) -> str:
    return """
SELECT d.classoid::pg_catalog.regclass::text AS cls, d.objoid, d.objsubid, d.description
  FROM pg_catalog.pg_description d WHERE d.objoid >= 16384"""


def binary_types(v: int) -> str:
    """Per column type of the tables: can COPY (FORMAT binary) carry it into another database?
    Needs send/receive functions all the way down, and no embedded type OID that differs between
    databases (array_recv and record_recv check element and field type OIDs)."""
    return f"""
WITH RECURSIVE walk(root, t) AS (
    SELECT DISTINCT a.atttypid, a.atttypid
      FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
      JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
     WHERE {NSP_OK} AND c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped
  UNION
    SELECT w.root, x.child FROM walk w JOIN pg_catalog.pg_type ty ON ty.oid = w.t
     CROSS JOIN LATERAL (
           SELECT ty.typbasetype WHERE ty.typtype = 'd'
           UNION ALL SELECT ty.typelem WHERE ty.typelem <> 0
           UNION ALL SELECT a.atttypid FROM pg_catalog.pg_attribute a
                      WHERE ty.typrelid <> 0 AND a.attrelid = ty.typrelid AND a.attnum > 0
                        AND NOT a.attisdropped
           UNION ALL SELECT r.rngsubtype FROM pg_catalog.pg_range r
                      WHERE r.rngtypid = ty.oid OR r.rngmultitypid = ty.oid) x(child)
)
SELECT w.root, pg_catalog.bool_and(
         ty.typsend <> 0 AND ty.typreceive <> 0
         AND NOT (ty.typelem >= 10000 AND ty.typsubscript = 'pg_catalog.array_subscript_handler'::pg_catalog.regproc)
         AND NOT (ty.typrelid <> 0 AND EXISTS (
               SELECT 1 FROM pg_catalog.pg_attribute a WHERE a.attrelid = ty.typrelid
                  AND a.attnum > 0 AND NOT a.attisdropped AND a.atttypid >= 10000))) AS ok
  FROM walk w JOIN pg_catalog.pg_type ty ON ty.oid = w.t
 GROUP BY w.root"""
