//! Move groups: sites that share a database or a login, found with union-find. A group is
//! the unit the wave planner places; it never splits across waves. Databases belong to exactly
//! one group (the group of the sites that use them); a database no site uses is its own group
//! of zero sites and is not moved by this plan (reported as unused).
//!
//! Group ids are assigned in order of each group's first site in the inventory, so they are
//! deterministic for a given inventory.

use rayon::prelude::*;

use crate::inventory::Inventory;
use crate::load::hash64;

/// Disjoint sets with path halving and union by size.
pub struct UnionFind {
    parent: Vec<u32>,
    size: Vec<u32>,
}

impl UnionFind {
    pub fn new(n: usize) -> Self {
        UnionFind {
            parent: (0..n as u32).collect(),
            size: vec![1; n],
        }
    }
    pub fn find(&mut self, mut x: u32) -> u32 {
        while self.parent[x as usize] != x {
            let p = self.parent[x as usize];
            self.parent[x as usize] = self.parent[p as usize];
            x = p;
        }
        x
    }
    pub fn union(&mut self, a: u32, b: u32) {
        let (mut a, mut b) = (self.find(a), self.find(b));
        if a == b {
            return;
        }
        if self.size[a as usize] < self.size[b as usize] {
            std::mem::swap(&mut a, &mut b);
        }
        self.parent[b as usize] = a;
        self.size[a as usize] += self.size[b as usize];
    }
}

/// The groups of an inventory, in compressed (CSR) form.
#[derive(Debug, Default)]
pub struct Groups {
    /// Group of each site.
    pub of_site: Vec<u32>,
    /// Sites of group `g`: `sites[site_start[g]..site_start[g+1]]`, in inventory order.
    pub sites: Vec<u32>,
    pub site_start: Vec<u32>,
    /// Databases of group `g`: `dbs[db_start[g]..db_start[g+1]]`, ascending.
    pub dbs: Vec<u32>,
    pub db_start: Vec<u32>,
    /// Site bytes + database bytes.
    pub bytes: Vec<u64>,
    /// Databases no site uses (not moved by the plan).
    pub unused_dbs: Vec<u32>,
}

impl Groups {
    pub fn len(&self) -> usize {
        self.bytes.len()
    }
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
    pub fn sites_of(&self, g: usize) -> &[u32] {
        &self.sites[self.site_start[g] as usize..self.site_start[g + 1] as usize]
    }
    pub fn dbs_of(&self, g: usize) -> &[u32] {
        &self.dbs[self.db_start[g] as usize..self.db_start[g + 1] as usize]
    }
}

/// Builds move groups over shared databases and logins.
pub fn build(inv: &Inventory) -> Groups {
    let n = inv.site_count();
    let mut uf = UnionFind::new(n);

    // Shared databases: every site joins the first site that uses the same database.
    let mut first_user = vec![u32::MAX; inv.database_count()];
    for s in 0..n {
        for &d in inv.site_dbs(s) {
            let f = &mut first_user[d as usize];
            if *f == u32::MAX {
                *f = s as u32;
            } else {
                uf.union(*f, s as u32);
            }
        }
    }

    // Shared logins: sort by login hash, then join equal logins within each run of equal hashes.
    let mut keys: Vec<(u64, u32)> = (0..n)
        .into_par_iter()
        .map(|s| (hash64(inv.site_login(s)), s as u32))
        .collect();
    keys.par_sort_unstable();
    let mut i = 0;
    while i < keys.len() {
        let mut j = i + 1;
        while j < keys.len() && keys[j].0 == keys[i].0 {
            j += 1;
        }
        for a in i + 1..j {
            let la = inv.site_login(keys[a].1 as usize);
            if let Some(b) = (i..a).find(|&b| inv.site_login(keys[b].1 as usize) == la) {
                uf.union(keys[b].1, keys[a].1);
            }
        }
        i = j;
    }

    // Number groups by first site; count members.
    let mut of_site = vec![0u32; n];
    let mut gid_of_root = vec![u32::MAX; n];
    let mut counts: Vec<u32> = Vec::new();
    for (s, slot) in of_site.iter_mut().enumerate() {
        let r = uf.find(s as u32) as usize;
        if gid_of_root[r] == u32::MAX {
            gid_of_root[r] = counts.len() as u32;
            counts.push(0);
        }
        let g = gid_of_root[r];
        *slot = g;
        counts[g as usize] += 1;
    }
    let ng = counts.len();
    let mut site_start = Vec::with_capacity(ng + 1);
    let mut acc = 0u32;
    site_start.push(0);
    for c in &counts {
        acc += c;
        site_start.push(acc);
    }
    let mut fill: Vec<u32> = site_start[..ng].to_vec();
    let mut sites = vec![0u32; n];
    for (s, &g) in of_site.iter().enumerate() {
        sites[fill[g as usize] as usize] = s as u32;
        fill[g as usize] += 1;
    }

    // Databases per group (each database lands in its first user's group).
    let mut dcount = vec![0u32; ng];
    let mut unused_dbs = Vec::new();
    for (d, &f) in first_user.iter().enumerate() {
        if f == u32::MAX {
            unused_dbs.push(d as u32);
        } else {
            dcount[of_site[f as usize] as usize] += 1;
        }
    }
    let mut db_start = Vec::with_capacity(ng + 1);
    acc = 0;
    db_start.push(0);
    for c in &dcount {
        acc += c;
        db_start.push(acc);
    }
    let mut dfill: Vec<u32> = db_start[..ng].to_vec();
    let mut dbs = vec![0u32; acc as usize];
    for (d, &f) in first_user.iter().enumerate() {
        if f != u32::MAX {
            let g = of_site[f as usize] as usize;
            dbs[dfill[g] as usize] = d as u32;
            dfill[g] += 1;
        }
    }

    let mut groups = Groups {
        of_site,
        sites,
        site_start,
        dbs,
        db_start,
        bytes: Vec::new(),
        unused_dbs,
    };
    groups.bytes = (0..ng)
        .into_par_iter()
        .map(|g| {
            let sb: u64 = groups
                .sites_of(g)
                .iter()
                .map(|&s| inv.sites.recs[s as usize].bytes)
                .sum();
            let db: u64 = groups
                .dbs_of(g)
                .iter()
                .map(|&d| inv.databases.bytes[d as usize])
                .sum();
            sb.saturating_add(db)
        })
        .collect();
    groups
}
