// vcsim launcher: serves govmomi's vSphere simulator (built in GOPATH mode against Debian's govmomi; see tests/vcsim/__init__.py).
package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"log"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	_ "github.com/vmware/govmomi/cns/simulator"
	_ "github.com/vmware/govmomi/lookup/simulator"
	_ "github.com/vmware/govmomi/pbm/simulator"
	"github.com/vmware/govmomi/simulator"
	_ "github.com/vmware/govmomi/sts/simulator"
	_ "github.com/vmware/govmomi/vapi/simulator"
)

func main() {
	listen := flag.String("l", "127.0.0.1:8989", "listen address (port 0 = random)")
	esx := flag.Bool("esx", false, "simulate a standalone ESX host instead of vCenter")
	useTLS := flag.Bool("tls", true, "serve https (built-in localhost cert)")
	user := flag.String("username", "user", "login user")
	pass := flag.String("password", "pass", "login password")
	load := flag.String("load", "", "load inventory from a directory")
	trace := flag.Bool("trace", false, "trace SOAP to stderr")
	autostart := flag.Bool("autostart", true, "power on model VMs")
	delay := flag.Int("delay", 0, "ms delay per SOAP call")
	dc := flag.Int("dc", 1, "datacenters")
	cluster := flag.Int("cluster", 1, "clusters per DC")
	host := flag.Int("host", 3, "hosts per cluster")
	standalone := flag.Int("standalone-host", 1, "standalone hosts per DC")
	pool := flag.Int("pool", 0, "child resource pools per cluster")
	vm := flag.Int("vm", 2, "VMs per resource pool")
	ds := flag.Int("ds", 1, "datastores")
	pg := flag.Int("pg", 1, "DV portgroups per DC")
	folder := flag.Int("folder", 0, "folders per DC")
	app := flag.Int("app", 0, "vApps per cluster")
	pod := flag.Int("pod", 0, "storage pods per cluster")
	usage := flag.String("host-usage", "", "host CPU and memory usage in percent: NAME=CPU:MEM,...")
	flag.Parse()

	var m *simulator.Model
	if *esx {
		m = simulator.ESX()
	} else {
		m = simulator.VPX()
		m.Datacenter, m.Cluster, m.ClusterHost, m.Host = *dc, *cluster, *host, *standalone
		m.Pool, m.Portgroup, m.Folder, m.App, m.Pod = *pool, *pg, *folder, *app, *pod
	}
	m.Machine, m.Datastore, m.Autostart = *vm, *ds, *autostart
	m.DelayConfig.Delay = *delay
	simulator.Trace = *trace

	var err error
	if *load != "" {
		err = m.Load(*load)
	} else {
		err = m.Create()
	}
	if err != nil {
		log.Fatal(err)
	}
	if err := setHostUsage(*usage); err != nil {
		log.Fatal(err)
	}
	m.Service.RegisterEndpoints = true
	m.Service.Listen = &url.URL{Host: *listen, User: url.UserPassword(*user, *pass)}
	if *useTLS {
		m.Service.TLS = new(tls.Config)
	}
	s := m.Service.NewServer()
	fmt.Printf("export GOVC_URL=%s GOVC_INSECURE=1\n", s.URL)
	fmt.Printf("VCSIM_READY %s %s\n", s.URL.Scheme, s.URL.Host)
	os.Stdout.Sync()

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	s.Close()
	m.Remove()
}

// setHostUsage sets quickStats.overallCpuUsage/overallMemoryUsage of the named hosts (vcsim gives every host
// the same figures) from "NAME=CPU:MEM,..." percentages of the host's CPU MHz and memory.
func setHostUsage(spec string) error {
	if spec == "" {
		return nil
	}
	want := map[string][2]float64{}
	for _, item := range strings.Split(spec, ",") {
		name, pcts := item, ""
		if i := strings.Index(item, "="); i >= 0 {
			name, pcts = item[:i], item[i+1:]
		}
		parts := strings.Split(pcts, ":")
		if len(parts) != 2 {
			return fmt.Errorf("-host-usage: want NAME=CPU:MEM, got %q", item)
		}
		cpu, err1 := strconv.ParseFloat(parts[0], 64)
		mem, err2 := strconv.ParseFloat(parts[1], 64)
		if err1 != nil || err2 != nil {
			return fmt.Errorf("-host-usage: bad percentages in %q", item)
		}
		want[name] = [2]float64{cpu, mem}
	}
	for _, entity := range simulator.Map.All("HostSystem") {
		h, ok := entity.(*simulator.HostSystem)
		if !ok {
			continue
		}
		pct, found := want[h.Name]
		if !found {
			continue
		}
		delete(want, h.Name)
		hw := h.Summary.Hardware
		h.Summary.QuickStats.OverallCpuUsage = int32(pct[0] / 100 * float64(hw.CpuMhz) * float64(hw.NumCpuCores))
		h.Summary.QuickStats.OverallMemoryUsage = int32(pct[1] / 100 * float64(hw.MemorySize/1024/1024))
	}
	for name := range want {
		return fmt.Errorf("-host-usage: no host %q", name)
	}
	return nil
}
